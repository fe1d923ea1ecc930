//! Marks test builds that can reach PostgreSQL (`OBA_TEST_DATABASE_URL` set), so that the
//! production-mode tests run there and show as ignored, not as passed, elsewhere. Production
//! mode needs NATS as well (`OBA_TEST_NATS_URL`). Likewise the browser tests, where
//! `OBA_TEST_CHROMEDRIVER` names Chromium's WebDriver (Debian's `chromium-driver`).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(oba_test_postgres)");
    println!("cargo::rerun-if-env-changed=OBA_TEST_DATABASE_URL");
    println!("cargo::rerun-if-env-changed=OBA_TEST_NATS_URL");
    println!("cargo::rustc-check-cfg=cfg(oba_test_browser)");
    println!("cargo::rerun-if-env-changed=OBA_TEST_CHROMEDRIVER");
    let set = |key| std::env::var_os(key).is_some_and(|v| !v.is_empty());
    if set("OBA_TEST_DATABASE_URL") && set("OBA_TEST_NATS_URL") {
        println!("cargo::rustc-cfg=oba_test_postgres");
    }
    if set("OBA_TEST_CHROMEDRIVER") {
        println!("cargo::rustc-cfg=oba_test_browser");
    }
}
