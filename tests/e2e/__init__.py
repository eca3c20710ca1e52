"""End-to-end tests: headless Chromium (Playwright) against a real ``streamlit run`` server."""
