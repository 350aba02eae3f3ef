// A task's return value is stored in the object store, so it must be serializable.

pub struct Report {
    pub lines: Vec<String>,
}

#[lumen::remote]
fn make_report(n: usize) -> Report {
    Report {
        lines: vec![String::new(); n],
    }
}

fn main() {}
