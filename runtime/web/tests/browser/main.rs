//! The web interface in a real browser: a server in-process on 127.0.0.1, headless Chromium
//! driven through chromedriver (WebDriver). Without Chromium the tests are skipped, unless
//! PHASEBOX_REQUIRE_BROWSER=1 (CI), which makes them fail instead.

mod browser;
mod lab;
mod pages;
