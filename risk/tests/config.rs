#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Configuration: defaults, serde, validation errors that name the field.

use custos_risk::{RiskAssessment, RiskConfig, RiskError, RiskModel, RiskReason, RiskState};

fn field_of(config: RiskConfig) -> String {
    match RiskModel::new(config.clone()) {
        Err(RiskError::InvalidConfig { field, reason }) => {
            assert!(!reason.is_empty());
            // RiskState validates the same way.
            assert!(RiskState::new(&config).is_err());
            field
        }
        Ok(_) => panic!("accepted {config:?}"),
    }
}

#[test]
fn defaults_are_valid_and_an_empty_document_means_defaults() {
    RiskConfig::default().validate().unwrap();
    let c: RiskConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(c, RiskConfig::default());
    let c: RiskConfig =
        serde_json::from_str(r#"{"amount_points": 70, "deny_destinations": ["0xabc"]}"#).unwrap();
    assert_eq!(c.amount_points, 70);
    assert_eq!(c.ring_capacity, 512);
    RiskModel::new(c).unwrap();
    assert_eq!(RiskModel::default().config(), &RiskConfig::default());
    // Round trip.
    let json = serde_json::to_string(&RiskConfig::default()).unwrap();
    assert_eq!(
        serde_json::from_str::<RiskConfig>(&json).unwrap(),
        RiskConfig::default()
    );
}

#[test]
fn unknown_fields_are_refused() {
    let err = serde_json::from_str::<RiskConfig>(r#"{"amount_point": 70}"#).unwrap_err();
    assert!(err.to_string().contains("amount_point"), "{err}");
}

#[test]
fn bad_values_name_the_field() {
    let d = RiskConfig::default;
    let cases: Vec<(RiskConfig, &str)> = vec![
        (
            RiskConfig {
                ring_capacity: 0,
                ..d()
            },
            "ring_capacity",
        ),
        (
            RiskConfig {
                ring_capacity: 1 << 20,
                ..d()
            },
            "ring_capacity",
        ),
        (
            RiskConfig {
                min_samples: 2,
                ..d()
            },
            "min_samples",
        ),
        (
            RiskConfig {
                ring_capacity: 4,
                ..d()
            },
            "min_samples",
        ),
        (
            RiskConfig {
                amount_points: 101,
                ..d()
            },
            "amount_points",
        ),
        (
            RiskConfig {
                fan_in_points: 500,
                ..d()
            },
            "fan_in_points",
        ),
        (
            RiskConfig {
                amount_z_full: 3.0,
                ..d()
            },
            "amount_z_full",
        ),
        (
            RiskConfig {
                amount_z_threshold: f64::NAN,
                ..d()
            },
            "amount_z_threshold",
        ),
        (
            RiskConfig {
                amount_mad_floor_log2: 0.0,
                ..d()
            },
            "amount_mad_floor_log2",
        ),
        (
            RiskConfig {
                velocity_factor: 0.5,
                ..d()
            },
            "velocity_factor",
        ),
        (
            RiskConfig {
                velocity_window_secs: 0,
                ..d()
            },
            "velocity_window_secs",
        ),
        (
            RiskConfig {
                history_window_secs: u64::MAX,
                ..d()
            },
            "history_window_secs",
        ),
        (
            RiskConfig {
                max_destinations_per_wallet: 0,
                ..d()
            },
            "max_destinations_per_wallet",
        ),
        (
            RiskConfig {
                fan_in_min_wallets: 1,
                ..d()
            },
            "fan_in_min_wallets",
        ),
        (
            RiskConfig {
                fan_in_max_tracked_payers: 4,
                ..d()
            },
            "fan_in_max_tracked_payers",
        ),
        (
            RiskConfig {
                fan_in_window_secs: 40 * 86_400,
                ..d()
            },
            "fan_in_window_secs",
        ),
        (
            RiskConfig {
                fresh_destination_secs: 40 * 86_400,
                ..d()
            },
            "fresh_destination_secs",
        ),
        (
            RiskConfig {
                deny_destinations: vec!["0xa".into(), String::new()],
                ..d()
            },
            "deny_destinations[1]",
        ),
        (
            RiskConfig {
                deny_destinations: vec![" 0xa".into()],
                ..d()
            },
            "deny_destinations[0]",
        ),
    ];
    for (config, want) in cases {
        assert_eq!(field_of(config), want);
    }
    let msg = RiskModel::new(RiskConfig {
        amount_points: 101,
        ..d()
    })
    .unwrap_err()
    .to_string();
    assert_eq!(
        msg,
        "invalid risk config: amount_points: points must be at most 100, got 101"
    );
}

#[test]
fn assessment_serialises_and_summarises() {
    let a = RiskAssessment {
        score: 85,
        reasons: vec![
            RiskReason {
                code: "amount_outlier".into(),
                points: 60,
                message: "amount 1 is 50.0x the median".into(),
            },
            RiskReason {
                code: "new_destination".into(),
                points: 25,
                message: "first withdrawal".into(),
            },
        ],
    };
    assert_eq!(
        a.summary(),
        "risk 85/100: amount_outlier +60, new_destination +25"
    );
    let json = serde_json::to_value(&a).unwrap();
    assert_eq!(json["score"], 85);
    assert_eq!(json["reasons"][0]["code"], "amount_outlier");
    assert_eq!(json["reasons"][1]["points"], 25);
    let back: RiskAssessment = serde_json::from_value(json).unwrap();
    assert_eq!(back, a);
    assert!(a.has("new_destination"));
    assert_eq!(a.points("amount_outlier"), 60);
    assert_eq!(a.points("fan_in"), 0);
}
