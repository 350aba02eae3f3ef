use lumen::testing::TestCluster;

#[lumen::remote]
fn where_am_i(x: u32) -> (u32, String) {
    (x * 2, lumen::runtime_context().node_id().to_string())
}

#[test]
fn smoke() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let cluster = TestCluster::start(vec![
        lumen::Config::default()
            .num_cpus(2.0)
            .resource("node0", 2.0),
        lumen::Config::default()
            .num_cpus(2.0)
            .resource("node1", 2.0),
    ])
    .unwrap();
    lumen::init_with(cluster.driver_config()).unwrap();
    eprintln!("nodes: {:?}", lumen::nodes());
    let r = where_am_i::options().resource("node1", 1.0).remote(21);
    let (v, node) = lumen::get_timeout(&r, std::time::Duration::from_secs(30)).unwrap();
    assert_eq!(v, 42);
    assert_eq!(node, cluster.node_id(1).unwrap().to_string());
    lumen::shutdown();
}
