//! The withdrawal lifecycle as one pure function: (state, event) → (state,
//! effects). The engine is its driver: it finds out what happened (a score,
//! a policy decision, a quorum, a signature, a receipt), asks [`next`] where
//! that leads, and executes the effects in order (log entry first, then the
//! compare-and-set commit, then everything that talks to the outside). No
//! other code decides which state follows which, so the table below is the
//! whole lifecycle and is tested without a database or a cluster.

use std::fmt;

use super::state::State;

/// How a policy decision routes a withdrawal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// No rule allows it, or a rule blocks it.
    Block,
    /// Approvers must sign the statement.
    NeedApprovals,
    /// The policy allows it without approvals.
    Allow,
}

/// Something that happened to a withdrawal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The risk model scored it.
    Scored,
    /// The policy was evaluated and its decision stored.
    Decided,
    /// The policy could not be evaluated (the withdrawal cannot proceed).
    EvaluationFailed,
    /// The stored decision was acted on.
    Routed(Route),
    /// The approvals satisfy the quorum.
    QuorumReached,
    /// An approver rejected it (the quorum can no longer be met).
    Rejected,
    /// The approval statement expired before signing began.
    Expired,
    /// At least t signers registered the quorum; `time_lock`: the decision
    /// carries a delay.
    QuorumRegistered {
        /// The decision carries a delay.
        time_lock: bool,
    },
    /// Too many signers refused the quorum for t to remain.
    SignersRefused,
    /// The time lock is over (on the coordinator's clock; signers measure
    /// their own).
    TimeLockElapsed,
    /// The threshold signature exists.
    Signed,
    /// Signing was refused or failed for good.
    SigningFailed,
    /// The signed transaction was handed to the chain.
    Broadcast,
    /// The transaction has enough confirmations.
    Confirmed,
    /// The transaction reverted or its nonce went to another transaction.
    ChainFailed,
    /// An approver of the cancel group, the requesting client or an admin
    /// cancelled it.
    Cancel,
}

impl Event {
    /// Every event, for exhaustive tests.
    pub const ALL: [Event; 19] = [
        Event::Scored,
        Event::Decided,
        Event::EvaluationFailed,
        Event::Routed(Route::Block),
        Event::Routed(Route::NeedApprovals),
        Event::Routed(Route::Allow),
        Event::QuorumReached,
        Event::Rejected,
        Event::Expired,
        Event::QuorumRegistered { time_lock: false },
        Event::QuorumRegistered { time_lock: true },
        Event::SignersRefused,
        Event::TimeLockElapsed,
        Event::Signed,
        Event::SigningFailed,
        Event::Broadcast,
        Event::Confirmed,
        Event::ChainFailed,
        Event::Cancel,
    ];
}

/// What the driver does for a transition, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Append a `StatusChanged` entry before committing (fail closed: no
    /// entry, no transition). Transitions whose event has its own entry
    /// (risk score, policy decision, signature, broadcast, confirmation,
    /// cancel) log that one instead, before the event is reported.
    LogStatus,
    /// Commit the new state with a compare-and-set on the old one.
    Commit,
    /// Count the signed withdrawal in the risk model's history.
    RecordRisk,
    /// The nonce reserved for an unsigned transaction goes to the next
    /// withdrawal (no signature exists for it).
    ReleaseNonce,
    /// Tell the signers, which then refuse it on their own records too.
    NotifySigners,
    /// Keep driving: the new state has work that needs no outside input.
    Continue,
}

/// A legal transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The state it leads to.
    pub to: State,
    /// What the driver executes, in order.
    pub effects: Vec<Effect>,
}

/// An event that cannot happen in a state: the driver changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{event:?} cannot happen to a withdrawal that is {from}")]
pub struct IllegalTransition {
    /// The state the withdrawal is in.
    pub from: State,
    /// The event refused.
    pub event: Event,
}

/// The lifecycle: where `event` leads from `from`, and what to do about it.
pub fn next(from: State, event: Event) -> Result<Transition, IllegalTransition> {
    use Effect::{Commit, Continue, LogStatus, NotifySigners, RecordRisk, ReleaseNonce};
    use State as S;
    let (to, effects): (State, &[Effect]) = match (from, event) {
        (S::Requested, Event::Scored) => (S::RiskScored, &[Commit, Continue]),
        (S::RiskScored, Event::Decided) => (S::PolicyEvaluated, &[Commit, Continue]),
        (S::RiskScored, Event::EvaluationFailed) => (S::Failed, &[LogStatus, Commit]),
        (S::PolicyEvaluated, Event::Routed(Route::Block)) => (S::Blocked, &[LogStatus, Commit]),
        (S::PolicyEvaluated, Event::Routed(Route::NeedApprovals)) => {
            (S::AwaitingApprovals, &[LogStatus, Commit])
        }
        (S::PolicyEvaluated, Event::Routed(Route::Allow))
        | (S::AwaitingApprovals, Event::QuorumReached) => {
            (S::Approved, &[LogStatus, Commit, Continue])
        }
        (S::AwaitingApprovals, Event::Rejected) => (S::Rejected, &[LogStatus, Commit]),
        (S::AwaitingApprovals | S::TimeLocked, Event::Expired) => {
            (S::Expired, &[LogStatus, Commit])
        }
        (S::Approved, Event::QuorumRegistered { time_lock: false })
        | (S::TimeLocked, Event::TimeLockElapsed) => (S::Signing, &[LogStatus, Commit, Continue]),
        (S::Approved, Event::QuorumRegistered { time_lock: true }) => {
            (S::TimeLocked, &[LogStatus, Commit])
        }
        (S::Approved, Event::SignersRefused) => (S::Failed, &[LogStatus, Commit]),
        (S::Signing, Event::Signed) => (S::Signed, &[Commit, RecordRisk, Continue]),
        (S::Signing, Event::SigningFailed) => (S::Failed, &[LogStatus, Commit, ReleaseNonce]),
        (S::Signed, Event::Broadcast) => (S::Broadcast, &[Commit, Continue]),
        (S::Broadcast, Event::Confirmed) => (S::Confirmed, &[Commit]),
        (S::Broadcast, Event::ChainFailed) => (S::Failed, &[LogStatus, Commit]),
        (
            S::Requested
            | S::RiskScored
            | S::PolicyEvaluated
            | S::AwaitingApprovals
            | S::Approved
            | S::TimeLocked,
            Event::Cancel,
        ) => (S::Cancelled, &[Commit, NotifySigners]),
        _ => return Err(IllegalTransition { from, event }),
    };
    Ok(Transition {
        to,
        effects: effects.to_vec(),
    })
}

/// What the driver must do to find a withdrawal's next event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// Score the risk.
    Score,
    /// Evaluate the policy.
    Decide,
    /// Act on the stored decision.
    Route,
    /// Wait for verdicts; expire when the statement does.
    AwaitVerdicts,
    /// Ask the signers to register the quorum.
    RegisterQuorum,
    /// Wait for the time lock; expire when the statement does.
    AwaitTimeLock,
    /// Run the threshold signature.
    Sign,
    /// Broadcast, track, bump fees (chains with an adapter).
    Publish,
    /// Nothing: the state is terminal.
    Nothing,
}

/// The work a state asks for.
pub fn work(state: State) -> Work {
    match state {
        State::Requested => Work::Score,
        State::RiskScored => Work::Decide,
        State::PolicyEvaluated => Work::Route,
        State::AwaitingApprovals => Work::AwaitVerdicts,
        State::Approved => Work::RegisterQuorum,
        State::TimeLocked => Work::AwaitTimeLock,
        State::Signing => Work::Sign,
        State::Signed | State::Broadcast => Work::Publish,
        State::Blocked
        | State::Confirmed
        | State::Rejected
        | State::Cancelled
        | State::Expired
        | State::Failed => Work::Nothing,
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Route::Block => "block",
            Route::NeedApprovals => "require_approvals",
            Route::Allow => "allow",
        })
    }
}

impl Route {
    /// The stored outcome name (`withdrawals.outcome`).
    pub fn parse(s: &str) -> Option<Route> {
        [Route::Block, Route::NeedApprovals, Route::Allow]
            .into_iter()
            .find(|r| r.to_string() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every legal (from, event, to): the lifecycle in docs/ARCHITECTURE.md.
    const LEGAL: &[(State, Event, State)] = &[
        (State::Requested, Event::Scored, State::RiskScored),
        (State::RiskScored, Event::Decided, State::PolicyEvaluated),
        (State::RiskScored, Event::EvaluationFailed, State::Failed),
        (
            State::PolicyEvaluated,
            Event::Routed(Route::Block),
            State::Blocked,
        ),
        (
            State::PolicyEvaluated,
            Event::Routed(Route::NeedApprovals),
            State::AwaitingApprovals,
        ),
        (
            State::PolicyEvaluated,
            Event::Routed(Route::Allow),
            State::Approved,
        ),
        (
            State::AwaitingApprovals,
            Event::QuorumReached,
            State::Approved,
        ),
        (State::AwaitingApprovals, Event::Rejected, State::Rejected),
        (State::AwaitingApprovals, Event::Expired, State::Expired),
        (State::TimeLocked, Event::Expired, State::Expired),
        (
            State::Approved,
            Event::QuorumRegistered { time_lock: false },
            State::Signing,
        ),
        (
            State::Approved,
            Event::QuorumRegistered { time_lock: true },
            State::TimeLocked,
        ),
        (State::Approved, Event::SignersRefused, State::Failed),
        (State::TimeLocked, Event::TimeLockElapsed, State::Signing),
        (State::Signing, Event::Signed, State::Signed),
        (State::Signing, Event::SigningFailed, State::Failed),
        (State::Signed, Event::Broadcast, State::Broadcast),
        (State::Broadcast, Event::Confirmed, State::Confirmed),
        (State::Broadcast, Event::ChainFailed, State::Failed),
        (State::Requested, Event::Cancel, State::Cancelled),
        (State::RiskScored, Event::Cancel, State::Cancelled),
        (State::PolicyEvaluated, Event::Cancel, State::Cancelled),
        (State::AwaitingApprovals, Event::Cancel, State::Cancelled),
        (State::Approved, Event::Cancel, State::Cancelled),
        (State::TimeLocked, Event::Cancel, State::Cancelled),
    ];

    #[test]
    fn every_state_and_event_matches_the_table() {
        let mut legal = 0;
        for from in State::ALL {
            for event in Event::ALL {
                let want = LEGAL
                    .iter()
                    .find(|(f, e, _)| *f == from && *e == event)
                    .map(|(_, _, to)| *to);
                match (next(from, event), want) {
                    (Ok(t), Some(to)) => {
                        assert_eq!(t.to, to, "{from} --{event:?}-->");
                        legal += 1;
                    }
                    (Err(e), None) => {
                        assert_eq!((e.from, e.event), (from, event));
                        assert!(e.to_string().contains(from.as_str()));
                    }
                    (got, want) => panic!("{from} --{event:?}--> {got:?}, table says {want:?}"),
                }
            }
        }
        assert_eq!(legal, LEGAL.len());
    }

    #[test]
    fn terminal_states_accept_no_event_and_ask_no_work() {
        for from in State::ALL.into_iter().filter(|s| s.is_terminal()) {
            // `signed` waits for a broadcast on chains with an adapter.
            if from == State::Signed {
                continue;
            }
            assert_eq!(work(from), Work::Nothing, "{from}");
            for event in Event::ALL {
                assert!(next(from, event).is_err(), "{from} accepts {event:?}");
            }
        }
    }

    #[test]
    fn cancel_is_possible_exactly_until_signing_starts() {
        let signing = State::ALL.iter().position(|s| *s == State::Signing);
        for (i, from) in State::ALL.into_iter().enumerate() {
            let before_signing = Some(i) < signing && from != State::Blocked;
            assert_eq!(next(from, Event::Cancel).is_ok(), before_signing, "{from}");
            assert_eq!(from.cancellable(), before_signing, "{from}");
        }
        let t = next(State::TimeLocked, Event::Cancel).unwrap();
        assert_eq!(t.effects, vec![Effect::Commit, Effect::NotifySigners]);
    }

    #[test]
    fn effects_log_before_commit_and_act_after() {
        for from in State::ALL {
            for event in Event::ALL {
                let Ok(t) = next(from, event) else { continue };
                let commit = t.effects.iter().position(|e| *e == Effect::Commit);
                let Some(commit) = commit else {
                    panic!("{from} --{event:?}--> commits nothing");
                };
                for (i, e) in t.effects.iter().enumerate() {
                    match e {
                        Effect::LogStatus => assert!(i < commit, "{from} {event:?}"),
                        Effect::Commit => {}
                        _ => assert!(i > commit, "{from} {event:?}: {e:?} before commit"),
                    }
                }
                // A failed signature releases its nonce; nothing else does.
                assert_eq!(
                    t.effects.contains(&Effect::ReleaseNonce),
                    (from, event) == (State::Signing, Event::SigningFailed)
                );
            }
        }
    }

    #[test]
    fn stored_outcomes_parse() {
        for r in [Route::Block, Route::NeedApprovals, Route::Allow] {
            assert_eq!(Route::parse(&r.to_string()), Some(r));
        }
        assert_eq!(Route::parse("deny"), None);
    }

    /// Facts about a path through the lifecycle that every reachable state
    /// must agree with.
    #[derive(Default)]
    struct Seen {
        approved: bool,
        signing: bool,
        signed: bool,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// No sequence of events, legal or not, reaches a state the
        /// lifecycle forbids: signing only after approval, a signature only
        /// from signing, nothing after a terminal state, no cancel once
        /// signing began, and refused events change nothing.
        #[test]
        fn no_event_sequence_reaches_an_illegal_state(
            events in proptest::collection::vec(0..Event::ALL.len(), 0..40)
        ) {
            let mut state = State::Requested;
            let mut seen = Seen::default();
            for i in events {
                let event = Event::ALL[i];
                let Ok(t) = next(state, event) else { continue };
                prop_assert!(!(state.is_terminal() && state != State::Signed));
                match t.to {
                    State::Approved => seen.approved = true,
                    State::Signing => {
                        prop_assert!(seen.approved, "signing without approval");
                        seen.signing = true;
                    }
                    State::Signed => {
                        prop_assert!(seen.signing);
                        seen.signed = true;
                    }
                    State::Broadcast | State::Confirmed => prop_assert!(seen.signed),
                    State::Cancelled => prop_assert!(!seen.signing, "cancelled after signing began"),
                    State::TimeLocked => prop_assert!(seen.approved),
                    _ => {}
                }
                prop_assert_ne!(t.to, State::Requested);
                state = t.to;
            }
        }
    }
}
