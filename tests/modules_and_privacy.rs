// Remote items in nested modules, called through their module path, and private (non-pub)
// remote functions and actors.
// Modes: embedded only. The program checks the macros' shapes and the public API from a user
// crate; it asserts a one-node cluster and starts and stops the runtime itself.

mod inner {
    #[lumen::remote]
    pub fn f(x: u32) -> u32 {
        x + 1
    }

    pub mod deeper {
        #[lumen::remote]
        pub fn g(s: String) -> usize {
            s.len()
        }

        pub struct Acc {
            total: u64,
        }

        #[lumen::remote]
        impl Acc {
            pub fn new() -> Self {
                Acc { total: 0 }
            }

            pub fn push(&mut self, x: u64) -> u64 {
                self.total += x;
                self.total
            }
        }
    }

    // A private task, used through a public wrapper in the same module.
    #[lumen::remote]
    fn hidden(x: u32) -> u32 {
        x * 100
    }

    pub fn call_hidden(x: u32) -> lumen::ObjectRef<u32> {
        hidden::remote(x)
    }
}

// Same names as in `inner`: the registered paths differ, so both exist side by side.
#[lumen::remote]
fn f(x: u32) -> u32 {
    x + 2
}

// A private task and a private actor at the crate root.
#[lumen::remote]
fn private_task() -> String {
    "private".to_string()
}

struct Secret {
    word: String,
}

#[lumen::remote]
impl Secret {
    fn new(word: String) -> Self {
        Secret { word }
    }

    fn reveal(&self) -> String {
        self.word.clone()
    }

    fn set(&mut self, word: String) {
        self.word = word;
    }
}

// Remote items declared inside a function body (as in tests and doc examples).
fn local_items() -> u32 {
    #[lumen::remote]
    fn local_task(x: u32) -> u32 {
        x * 3
    }

    struct Local {
        n: u32,
    }

    #[lumen::remote]
    impl Local {
        fn new(n: u32) -> Self {
            Local { n }
        }

        fn get(&self) -> u32 {
            self.n
        }
    }

    let a = lumen::get(&local_task::remote(2)).unwrap();
    let l = Local::remote(5);
    a + lumen::get(&l.get().remote()).unwrap()
}

#[lumen::main]
fn program() {
    lumen::init_with(lumen::Config::default().num_cpus(2.0)).expect("init");

    assert_eq!(lumen::get(&inner::f::remote(1)).unwrap(), 2);
    assert_eq!(lumen::get(&f::remote(1)).unwrap(), 3);
    assert_eq!(
        lumen::get(&inner::deeper::g::remote("four".to_string())).unwrap(),
        4
    );
    assert_eq!(lumen::get(&inner::call_hidden(3)).unwrap(), 300);
    assert_eq!(
        lumen::get(&inner::f::options().num_cpus(1.0).remote(10)).unwrap(),
        11
    );

    let acc = inner::deeper::Acc::remote();
    let _first = acc.push(2).remote();
    assert_eq!(lumen::get(&acc.push(3).remote()).unwrap(), 5);

    assert_eq!(lumen::get(&private_task::remote()).unwrap(), "private");

    let s = Secret::remote("a".to_string());
    assert_eq!(lumen::get(&s.reveal().remote()).unwrap(), "a");
    lumen::get(&s.set("b".to_string()).remote()).unwrap();
    assert_eq!(lumen::get(&s.reveal().remote()).unwrap(), "b");
    assert_eq!(local_items(), 11);

    // Still ordinary local items.
    assert_eq!(Secret::new("c".to_string()).reveal(), "c");
    assert_eq!(private_task(), "private");
}

/// The program above, run once in this test's own process (it starts and stops the embedded
/// runtime itself, so it is not repeated on a local cluster).
#[test]
fn modules_and_privacy() {
    program();
}
