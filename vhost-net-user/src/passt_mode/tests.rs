use super::*;

fn parsed(argv: &[&str]) -> PasstArgs {
    parse(std::iter::once("passt").chain(argv.iter().copied()))
        .unwrap_or_else(|e| panic!("{argv:?}: exit {e:?}"))
}

#[test]
fn placeholder() {
    let p = parsed(&["-f"]);
    assert!(p.foreground);
}
