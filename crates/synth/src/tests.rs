use super::*;
use mailaudit_model::parse_observation_json;
use std::collections::HashSet;

fn take(config: Config, n: usize) -> Vec<Observation> {
    Generator::new(config).take(n).collect()
}

#[test]
fn same_seed_same_stream_other_seed_other_stream() {
    let a = take(Config::default(), 1000);
    assert_eq!(a, take(Config::default(), 1000));
    let other = Config {
        seed: 7,
        ..Config::default()
    };
    assert_ne!(a, take(other, 1000));
}

#[test]
fn proportions_are_roughly_as_specified() {
    let config = Config::default();
    let ext = format!("@{}", config.external_domain);
    let all = take(config, 100_000);
    let (mut owner, mut delegate, mut admin, mut external, mut failed) = (0, 0, 0, 0, 0);
    let mut ops = HashSet::new();
    for o in &all {
        ops.insert(o.operation);
        if o.result == OperationResult::Failed {
            failed += 1;
            assert_eq!(o.reason.as_deref(), Some("authentication failed"));
        }
        if o.acting_as.is_some() {
            admin += 1;
        } else if o.actor.ends_with(&ext) {
            external += 1;
        } else if o.actor == o.mailbox {
            owner += 1;
        } else {
            delegate += 1;
        }
    }
    let share = |n: usize| n as f64 / all.len() as f64;
    assert!(
        (0.80..0.95).contains(&share(owner)),
        "owner {}",
        share(owner)
    );
    assert!(
        (0.04..0.15).contains(&share(delegate)),
        "delegate {}",
        share(delegate)
    );
    assert!(
        admin > 0 && external > 0,
        "admin {admin} external {external}"
    );
    assert!(failed > 0 && share(failed) < 0.01, "failed {failed}");
    for op in [
        Operation::MailboxLogin,
        Operation::MailboxLogout,
        Operation::FolderBind,
        Operation::MessageBind,
        Operation::Move,
        Operation::Copy,
        Operation::MoveToDeletedItems,
        Operation::SoftDelete,
        Operation::HardDelete,
        Operation::Update,
        Operation::Create,
        Operation::SearchQueryInitiated,
        Operation::FolderCreate,
        Operation::UpdateInboxRules,
    ] {
        assert!(ops.contains(&op), "{op} never generated");
    }
}

#[test]
fn every_mailbox_sees_activity() {
    let g = Generator::new(Config {
        mailboxes: 1000,
        ..Config::default()
    });
    let names: HashSet<String> = (0..1000).map(|i| g.mailbox(i)).collect();
    let seen: HashSet<String> = g.take(200_000).map(|o| o.mailbox).collect();
    assert_eq!(seen, names);
}

#[test]
fn times_are_non_decreasing_and_cover_the_span() {
    let config = Config {
        total: 50_000,
        span_days: 3,
        ..Config::default()
    };
    let (start, end) = (config.start, config.start.plus_secs(3 * 86_400));
    let all = take(config, 50_000);
    assert!(all.windows(2).all(|w| w[0].time <= w[1].time));
    assert_eq!(all[0].time, start);
    let last = all[all.len() - 1].time;
    assert!(last <= end && last > end.plus_secs(-60), "{last}");
}

#[test]
fn every_observation_passes_the_model_check_and_round_trips_as_json() {
    let config = Config::default();
    let (start, span) = (config.start, i64::from(config.span_days) * 86_400);
    let now = start.plus_secs(span + 86_400);
    let mut line = Vec::new();
    for o in take(config, 100_000) {
        assert!(o.time >= start && o.time <= start.plus_secs(span));
        o.check(now).unwrap();
        line.clear();
        write_json_line(&o, &mut line);
        assert_eq!(line.pop(), Some(b'\n'));
        let text = std::str::from_utf8(&line).unwrap();
        assert!(!text.contains('\n'));
        assert_eq!(parse_observation_json(text, now).unwrap(), o);
    }
}

#[test]
fn samples_exist() {
    for mailboxes in [5000, 2, 1] {
        let g = Generator::new(Config {
            mailboxes,
            ..Config::default()
        });
        let (mailbox, actor) = (g.sample_mailbox(), g.sample_actor());
        let first: Vec<Observation> = g.take(20_000).collect();
        assert!(
            first
                .iter()
                .take(2)
                .all(|o| o.mailbox == mailbox && o.actor == actor),
            "the stream opens with the sample actor on the sample mailbox"
        );
        let non_owner = first
            .iter()
            .filter(|o| o.mailbox == mailbox && o.actor != mailbox)
            .count();
        assert!(non_owner > 20, "{mailboxes}: {non_owner}");
        assert!(first.iter().filter(|o| o.actor == actor).count() > 20);
    }
}

#[test]
fn items_look_like_mail() {
    let mut seen = std::collections::HashMap::new();
    for o in take(Config::default(), 50_000) {
        for item in &o.items {
            let id = item.message_id.as_deref().unwrap();
            assert!(id.starts_with('<') && id.ends_with('>') && id.contains('@'));
            let size = item.size.unwrap();
            assert!((2048..=2_097_152).contains(&size));
            // One uid in one mailbox is one message.
            let key = (o.mailbox.clone(), item.uid.unwrap());
            let prev = seen.insert(key, (id.to_string(), item.subject.clone()));
            assert!(prev.is_none_or(|p| p == (id.to_string(), item.subject.clone())));
        }
        if matches!(o.operation, Operation::Move | Operation::Copy) {
            assert!(o.destination_folder.is_some() && o.destination_folder != o.folder);
            assert!((1..=5).contains(&o.items.len()));
        }
    }
}
