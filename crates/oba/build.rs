//! Marks test builds that can reach PostgreSQL (`OBA_TEST_DATABASE_URL` set), so that the
//! production-mode tests run there and show as ignored, not as passed, elsewhere.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(oba_test_postgres)");
    println!("cargo::rerun-if-env-changed=OBA_TEST_DATABASE_URL");
    if std::env::var_os("OBA_TEST_DATABASE_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=oba_test_postgres");
    }
}
