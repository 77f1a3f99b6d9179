//! Every strategy against results worked out by hand on two- and three-element vectors.

use super::*;

fn update(delta: &[f32], examples: u64) -> ClientUpdate {
    ClientUpdate {
        delta: delta.to_vec(),
        examples,
    }
}

fn run(spec: &str, global: &[f32], rounds: &[&[ClientUpdate]]) -> Vec<f32> {
    let mut strategy = spec::parse(spec).unwrap();
    let mut global = global.to_vec();
    for updates in rounds {
        strategy.aggregate(&mut global, updates).unwrap();
    }
    global
}

fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-5, "{a:?} != {b:?}");
    }
}

#[test]
fn fedavg_and_fedprox_weight_by_examples() {
    // (1*[1,0] + 3*[0,2]) / 4 = [0.25, 1.5]
    let round = [update(&[1.0, 0.0], 1), update(&[0.0, 2.0], 3)];
    close(&run("fedavg", &[1.0, 1.0], &[&round]), &[1.25, 2.5]);
    close(&run("fedprox:mu=0.1", &[1.0, 1.0], &[&round]), &[1.25, 2.5]);
    // FedProx's weight goes to the devices' local training.
    let mut local = tandem_runtime::fl::task::LocalConfig {
        epochs: 1,
        batch: 32,
        lr: 0.1,
        momentum: 0.9,
        proximal_mu: 0.0,
        max_steps: None,
    };
    spec::parse("fedprox:mu=0.1").unwrap().configure(&mut local);
    assert_eq!(local.proximal_mu, 0.1);
    spec::parse("fedavg").unwrap().configure(&mut local);
    assert_eq!(
        local.proximal_mu, 0.1,
        "FedAvg leaves local training as it is"
    );
}

#[test]
fn fedavgm_accumulates_velocity() {
    // v1 = [0.25, 1.5]; v2 = 0.5 v1 + [0.25, 1.5] = [0.375, 2.25]; w = v1 + v2.
    let round = [update(&[1.0, 0.0], 1), update(&[0.0, 2.0], 3)];
    close(
        &run("fedavgm:lr=1,momentum=0.5", &[0.0, 0.0], &[&round, &round]),
        &[0.625, 3.75],
    );
}

#[test]
fn adaptive_first_steps_match_their_closed_forms() {
    let round = [update(&[0.25, -1.5], 1)];
    // Adam, round 1 (Flower's t = 2): m = 0.1 d, v = 0.01 d^2, so
    // w += lr sqrt(1 - 0.99^2) / (1 - 0.9^2) * 0.1 d / (0.1 |d|) = that lr times sign(d).
    let lr1 = 0.1 * (1.0f32 - 0.99 * 0.99).sqrt() / (1.0 - 0.81);
    close(
        &run("fedadam:lr=0.1,tau=1e-9", &[0.0, 0.0], &[&round]),
        &[lr1, -lr1],
    );
    // Adagrad (beta1 = 0): m = d, v = d^2: w += lr sign(d).
    close(
        &run("fedadagrad:lr=0.1,tau=1e-9", &[0.0, 0.0], &[&round]),
        &[0.1, -0.1],
    );
    // Yogi, step 1: v = 0 - 0.01 d^2 sign(0 - d^2) = 0.01 d^2; no bias correction:
    // w += lr 0.1 d / (0.1 |d| + tau).
    let tau = 1e-3f32;
    let yogi = |d: f32| 0.01 * 0.1 * d / (0.1 * d.abs() + tau);
    close(
        &run("fedyogi:lr=0.01,tau=0.001", &[0.0, 0.0], &[&round]),
        &[yogi(0.25), yogi(-1.5)],
    );
    // Adam, round 2 with the same d: m = 0.19 d, v = 0.0199 d^2, t = 3.
    let lr2 = 0.1 * (1.0f32 - 0.99f32.powi(3)).sqrt() / (1.0 - 0.9f32.powi(3));
    let second = lr2 * 0.19 / 0.0199f32.sqrt();
    close(
        &run("fedadam:lr=0.1,tau=1e-9", &[0.0, 0.0], &[&round, &round]),
        &[lr1 + second, -lr1 - second],
    );
}

#[test]
fn a_round_that_would_make_the_model_non_finite_is_not_applied() {
    let huge = [update(&[f32::MAX, 1.0], 1), update(&[f32::MAX, 1.0], 1)];
    let mut s = spec::parse("fedavgm:lr=1,momentum=0.9").unwrap();
    let mut global = vec![f32::MAX, 0.0];
    assert_eq!(
        s.aggregate(&mut global, &huge),
        Err(StrategyError::NonFinite { at: 0 })
    );
    assert_eq!(global, [f32::MAX, 0.0]);
    // Nor is the server's momentum: the next good round starts from nothing.
    assert_eq!(s.state(), StrategyState::default());
    // After a good round, a bad one leaves the velocity the good one made.
    let mut global = vec![0.0, 0.0];
    s.aggregate(&mut global, &[update(&[1.0, 2.0], 1)]).unwrap();
    let good = s.state();
    let mut edge = vec![f32::MAX, 0.0];
    assert!(s.aggregate(&mut edge, &huge).is_err());
    assert_eq!(s.state(), good);
}

#[test]
fn median_and_trimmed_mean_ignore_outliers_and_example_counts() {
    let round = [
        update(&[1.0, 10.0], 1),
        update(&[2.0, -5.0], 1),
        update(&[100.0, 0.0], 1_000_000),
    ];
    close(&run("median", &[0.0, 0.0], &[&round]), &[2.0, 0.0]);
    let five: Vec<ClientUpdate> = [1.0, 2.0, 3.0, 4.0, 100.0]
        .iter()
        .map(|&v| update(&[v], 1))
        .collect();
    // beta 0.2 of 5 trims one at each end: mean(2, 3, 4) = 3.
    close(&run("trimmed-mean:beta=0.2", &[0.0], &[&five]), &[3.0]);
}

#[test]
fn krum_keeps_the_updates_closest_to_their_neighbours() {
    // The outlier first, and inliers whose scores differ: with n = 5, f = 1 each score
    // sums the 2 smallest squared distances to the others. [1,1]: 1 + 4 = 5;
    // [2,1]: 1 + 5 = 6; [1,3]: 4 + 5 = 9; [4,4]: 10 + 13 = 23; [100,100]: huge.
    let round: Vec<ClientUpdate> = [
        [100.0, 100.0],
        [1.0, 1.0],
        [2.0, 1.0],
        [1.0, 3.0],
        [4.0, 4.0],
    ]
    .iter()
    .map(|d| update(d, 1))
    .collect();
    let mut krum = spec::parse("krum:f=1").unwrap();
    let mut global = vec![0.0, 0.0];
    assert_eq!(krum.aggregate(&mut global, &round).unwrap().selected, [1]);
    close(&global, &[1.0, 1.0]);
    // Multi-Krum keeps the 3 best and averages them without weights, whatever the
    // example counts claim.
    let mut weighted = round.clone();
    weighted[3].examples = 1_000_000;
    let mut multi = spec::parse("multi-krum:f=1,m=3").unwrap();
    let mut global = vec![0.0, 0.0];
    assert_eq!(
        multi.aggregate(&mut global, &weighted).unwrap().selected,
        [1, 2, 3]
    );
    close(&global, &[4.0 / 3.0, 5.0 / 3.0]);
    assert_eq!(
        krum.aggregate(&mut global, &round[..4]),
        Err(StrategyError::TooFew {
            byzantine: 1,
            needed: 5,
            got: 4
        })
    );
}

#[test]
fn empty_and_ragged_rounds_are_refused_without_touching_the_model() {
    let mut s = FedAvg;
    let mut global = vec![1.0, 2.0];
    assert_eq!(s.aggregate(&mut global, &[]), Err(StrategyError::Empty));
    assert_eq!(
        s.aggregate(&mut global, &[update(&[1.0], 1)]),
        Err(StrategyError::Length {
            expected: 2,
            got: 1
        })
    );
    assert_eq!(global, [1.0, 2.0]);
}

#[test]
fn specs_round_trip_and_bad_ones_are_refused() {
    for spec in [
        "fedavg",
        "fedprox:mu=0.01",
        "fedavgm:lr=1,momentum=0.9",
        "fedadam:lr=0.1,tau=0.001,beta1=0.9,beta2=0.99",
        "fedyogi:lr=0.01,tau=0.001,beta1=0.9,beta2=0.99",
        "fedadagrad:lr=0.1,tau=0.000000001,beta1=0,beta2=0",
        "median",
        "trimmed-mean:beta=0.2",
        "krum:f=2",
        "multi-krum:f=2,m=5",
    ] {
        let parsed: StrategySpec = spec.parse().unwrap();
        assert_eq!(parsed.to_string(), spec);
        assert_eq!(
            parsed.to_string().parse::<StrategySpec>().unwrap(),
            parsed,
            "{spec}"
        );
    }
    for bad in [
        "",
        "fedsgd",
        "fedavg:lr=1",
        "fedprox:mu=0",
        "fedprox:mu=nan",
        "fedavgm:momentum=1",
        "trimmed-mean:beta=0.5",
        "krum:f=1.5",
        "multi-krum:m=0",
        "fedadam:tau",
        "fedadam:beta1=0.999999999",
        "trimmed-mean:beta=0.4999999999",
    ] {
        assert!(bad.parse::<StrategySpec>().is_err(), "{bad}");
    }
}

/// Issue 31: a linear strategy's aggregate is its partial sums' however the round's
/// updates are split among processes and merged, and restoring its saved state goes on
/// exactly where it was.
#[test]
fn partial_sums_merge_to_the_whole_rounds_aggregate_and_state_restores() {
    let round: Vec<ClientUpdate> = (0..7)
        .map(|i| {
            update(
                &[i as f32 * 0.5 - 1.0, (i * i) as f32 * 0.1],
                1 + i as u64 * 3,
            )
        })
        .collect();
    for spec in [
        "fedavg",
        "fedavgm:lr=0.5,momentum=0.9",
        "fedadam",
        "fedyogi",
    ] {
        let mut whole = spec::parse(spec).unwrap();
        let mut global_whole = vec![0.5, -0.5];
        whole.aggregate(&mut global_whole, &round).unwrap();

        // Three processes' shares of the same round, merged in another order.
        let mut split = spec::parse(spec).unwrap();
        let linear = split.linear().expect("a linear strategy");
        let mut shares = [PartialSum::new(2), PartialSum::new(2), PartialSum::new(2)];
        for (i, u) in round.iter().enumerate() {
            shares[i % 3].accumulate(u, linear.weight(u)).unwrap();
        }
        let [a, b, c] = shares;
        let mut merged = c;
        merged.merge(&a).unwrap();
        merged.merge(&b).unwrap();
        assert_eq!(merged.count(), 7);
        let mut global_split = vec![0.5, -0.5];
        linear
            .finish(&mut global_split, &merged.mean().unwrap())
            .unwrap();
        close(&global_split, &global_whole);

        // A second round from the saved state matches one that never stopped.
        let mut resumed = spec::parse(spec).unwrap();
        resumed.restore(whole.state()).unwrap();
        let mut global_resumed = global_whole.clone();
        whole.aggregate(&mut global_whole, &round).unwrap();
        resumed.aggregate(&mut global_resumed, &round).unwrap();
        assert_eq!(global_resumed, global_whole, "{spec}");
    }
    for robust in ["median", "trimmed-mean", "krum:f=1"] {
        assert!(spec::parse(robust).unwrap().linear().is_none(), "{robust}");
    }
    // Moments of another strategy's shape are refused.
    let moments = StrategyState {
        first: vec![1.0],
        second: Vec::new(),
        steps: 3,
    };
    assert!(FedAvg.restore(moments.clone()).is_err());
    assert!(spec::parse("fedadam").unwrap().restore(moments).is_err());
}
