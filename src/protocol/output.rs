//! What a worker process prints, on its way to the driver: the lines a worker process writes on
//! its stdout and stderr are read by the node that started it (see `node/output.rs`) and sent
//! to the job's driver ([`WorkerOutput`](super::owner::WorkerOutput)), which prints each with a
//! prefix saying where it ran (see [`prefix`]).
//!
//! To say *what* ran, a worker process whose output is read this way writes a **name line**
//! on both streams whenever the function or actor type it starts running differs from the last
//! one it announced (Ray's log monitor reads the same kind of marker from its workers' logs):
//! [`NAME_MARK`] followed by the name. The node takes it out of the stream and labels the lines
//! after it with that name. With several tasks running at once in one process, a line is
//! labelled with the last one that started, as in Ray.

use std::net::SocketAddr;

/// Starts a name line: ASCII "start of heading" (never in text a program means to print),
/// then `lumen:`.
pub(crate) const NAME_MARK: &str = "\u{1}lumen:";

/// Environment variable set (to `1`) in a worker process whose output its node reads: it
/// writes name lines.
pub(crate) const ANNOUNCE_ENV: &str = "LUMEN_WORKER_ANNOUNCE";

/// One line read from a worker process's stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line<'a> {
    /// Text the process printed.
    Text(&'a str),
    /// A name line: what runs from now on. `before` is text printed on the same line before it
    /// (a `print!` without a newline), if any.
    Name { before: &'a str, name: &'a str },
}

/// Reads one line (without its end).
pub(crate) fn parse(line: &str) -> Line<'_> {
    match line.find(NAME_MARK) {
        Some(at) => Line::Name {
            before: &line[..at],
            name: &line[at + NAME_MARK.len()..],
        },
        None => Line::Text(line),
    }
}

/// What to call the code at `path` in a prefix: a function by its name (`square` for
/// `my_crate::square`), an actor method by its type's name (`Counter` for
/// `my_crate::Counter::incr`).
pub(crate) fn short_name(path: &str, method: bool) -> &str {
    let mut parts = path.rsplit("::");
    let last = parts.next().unwrap_or(path);
    if method {
        parts.next().unwrap_or(last)
    } else {
        last
    }
}

/// The prefix of a forwarded line: `(square pid=4123 ip=10.0.0.5:6380)`, where `ip` is the
/// address of the node it ran on (as Ray's `ip=`, with the port, which tells apart the nodes of
/// one machine); without a name before anything ran.
pub(crate) fn prefix(name: &str, pid: u32, node: SocketAddr) -> String {
    if name.is_empty() {
        format!("(pid={pid} ip={node})")
    } else {
        format!("({name} pid={pid} ip={node})")
    }
}

/// Prints `lines` (`(name, text)`) of the worker process `pid` on node `node`, each after its
/// [`prefix`], on this process's stderr (`stderr`) or stdout, as one write per batch.
pub(crate) fn print(stderr: bool, pid: u32, node: SocketAddr, lines: &[(String, String)]) {
    use std::io::Write;
    let mut text = String::new();
    for (name, line) in lines {
        text.push_str(&prefix(name, pid, node));
        text.push(' ');
        text.push_str(line);
        text.push('\n');
    }
    let _ = if stderr {
        std::io::stderr().lock().write_all(text.as_bytes())
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes()).and_then(|()| out.flush())
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_lines_are_told_from_text_even_after_a_partial_line() {
        assert_eq!(parse("hello"), Line::Text("hello"));
        assert_eq!(
            parse(&format!("{NAME_MARK}square")),
            Line::Name {
                before: "",
                name: "square"
            }
        );
        assert_eq!(
            parse(&format!("no newline{NAME_MARK}Counter")),
            Line::Name {
                before: "no newline",
                name: "Counter"
            }
        );
    }

    #[test]
    fn functions_go_by_their_name_and_methods_by_their_type() {
        assert_eq!(short_name("my_crate::jobs::square", false), "square");
        assert_eq!(short_name("square", false), "square");
        assert_eq!(short_name("my_crate::Counter::incr", true), "Counter");
        assert_eq!(short_name("incr", true), "incr");
        let node: SocketAddr = "10.0.0.5:6380".parse().unwrap();
        assert_eq!(
            prefix("square", 42, node),
            "(square pid=42 ip=10.0.0.5:6380)"
        );
        assert_eq!(prefix("", 42, node), "(pid=42 ip=10.0.0.5:6380)");
    }
}
