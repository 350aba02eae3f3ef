//! Compile-time tests of lumen's proc-macros: misuse must fail with an actionable message
//! (`tests/ui/fail`), and ordinary programs using the public API must build and run
//! (`tests/ui/pass`). Regenerate the expected `.stderr` files with
//! `TRYBUILD=overwrite cargo test --test ui`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
