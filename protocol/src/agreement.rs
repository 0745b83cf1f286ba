//! One agreement instance carried on the log (DESIGN 4.1 and 4.4): the Tendermint engine of
//! [`crate::consensus`], fed with `Proposal` and `Vote` records, with the values it votes on
//! kept by id. The setup and the seal each own one per attempt or epoch and decide what their
//! values mean.

use std::collections::BTreeMap;

use crate::consensus::{self, Action, Message, Receipt, Tendermint, Validity, ValueId};
use crate::genesis::Consortium;
use crate::record::{Body, Instance, Value};
use crate::time::Time;
use crate::MemberIndex;

/// Rounds of one instance: bounds what a member may sign in it (3 records a round).
pub const MAX_ROUNDS: u32 = 32;

pub struct Agreement {
    instance: Instance,
    engine: Tendermint,
    values: BTreeMap<ValueId, Value>,
}

/// What a record said, once the engine took it.
pub struct Taken {
    pub receipt: Receipt,
    pub actions: Vec<Action>,
}

impl Agreement {
    pub fn new(consortium: &Consortium, me: MemberIndex, instance: Instance) -> Agreement {
        let n = consortium.n();
        let first = match instance {
            Instance::Setup { epoch, attempt } => {
                usize::try_from(epoch % n as u64).unwrap_or(0) + attempt as usize
            }
            Instance::Seal { epoch } => usize::try_from(epoch % n as u64).unwrap_or(0),
        };
        let config = consensus::Config {
            members: consortium.indices().collect(),
            me,
            faulty: consortium.faulty(),
            quorum: consortium.quorum(),
            first_proposer: first % n.max(1),
            round_ms: consortium.genesis.timing.round_ms,
            max_rounds: MAX_ROUNDS,
        };
        Agreement {
            instance,
            engine: Tendermint::new(config),
            values: BTreeMap::new(),
        }
    }

    pub fn instance(&self) -> Instance {
        self.instance
    }
    pub fn engine(&self) -> &Tendermint {
        &self.engine
    }
    pub fn value(&self, id: &ValueId) -> Option<&Value> {
        self.values.get(id)
    }
    /// Every value seen, with what we last said of it.
    pub fn values(&self) -> impl Iterator<Item = (&ValueId, &Value, Validity)> {
        self.values
            .iter()
            .map(|(id, v)| (id, v, self.engine.validity(id)))
    }
    pub fn decision(&self) -> Option<(u32, &Value)> {
        let (round, id) = self.engine.decision()?;
        Some((round, self.values.get(&id)?))
    }

    /// The message a `Proposal` or `Vote` body of this instance carries. Checks the parts that
    /// need no state: the instance, the round bound and the value's kind.
    pub fn message_of(body: &Body) -> Option<(Instance, Message, Option<&Value>)> {
        match body {
            Body::Proposal {
                instance,
                round,
                valid_round,
                value,
            } => Some((
                *instance,
                Message::Proposal {
                    round: *round,
                    value: value.id(),
                    valid_round: *valid_round,
                },
                Some(value),
            )),
            Body::Vote {
                instance,
                kind,
                round,
                value,
            } => Some((
                *instance,
                Message::Vote {
                    kind: *kind,
                    round: *round,
                    value: value.as_ref().map(Value::id),
                },
                value.as_ref(),
            )),
            _ => None,
        }
    }

    /// Whether a message of this instance by `author` would be counted.
    pub fn accepts(&self, author: MemberIndex, body: &Body) -> bool {
        match Self::message_of(body) {
            Some((instance, msg, _)) => {
                instance == self.instance && self.engine.accepts(author, &msg)
            }
            None => false,
        }
    }

    /// Takes an applied `Proposal` or `Vote` record of this instance by `author`.
    pub fn on_record(&mut self, now: Time, author: MemberIndex, body: &Body) -> Option<Taken> {
        let (instance, msg, value) = Self::message_of(body)?;
        if instance != self.instance {
            return None;
        }
        // The value first (the engine's rules may need it), kept only if the message counted.
        let id = value.map(|v| {
            let id = v.id();
            let fresh = !self.values.contains_key(&id);
            if fresh {
                self.values.insert(id, v.clone());
            }
            (id, fresh)
        });
        let (receipt, actions) = self.engine.on_message(now, author, msg);
        let counted = matches!(
            receipt,
            Receipt::New | Receipt::Equivocation | Receipt::Duplicate
        );
        if let (Some((id, true)), false) = (id, counted) {
            self.values.remove(&id);
        }
        Some(Taken { receipt, actions })
    }

    pub fn start(&mut self, now: Time) -> Vec<Action> {
        self.engine.start(now)
    }
    pub fn on_timeout(&mut self, now: Time) -> Vec<Action> {
        self.engine.on_timeout(now)
    }
    pub fn next_timeout(&self) -> Option<Time> {
        self.engine.next_timeout()
    }
    pub fn set_validity(&mut self, now: Time, id: ValueId, validity: Validity) -> Vec<Action> {
        self.engine.set_validity(now, id, validity)
    }
    /// Proposes a fresh value when the engine asked for one.
    pub fn propose(&mut self, now: Time, value: Value) -> Vec<Action> {
        let id = value.id();
        self.values.entry(id).or_insert(value);
        let mut out = self.engine.set_validity(now, id, Validity::Valid);
        out.extend(self.engine.propose(now, id));
        out
    }

    /// The record body for a `Propose` or `Vote` action.
    pub fn body(&self, action: &Action) -> Option<Body> {
        match *action {
            Action::Propose {
                round,
                value,
                valid_round,
            } => Some(Body::Proposal {
                instance: self.instance,
                round,
                valid_round,
                value: self.values.get(&value)?.clone(),
            }),
            Action::Vote { kind, round, value } => Some(Body::Vote {
                instance: self.instance,
                kind,
                round,
                value: match value {
                    Some(id) => Some(self.values.get(&id)?.clone()),
                    None => None,
                },
            }),
            Action::NeedValue { .. } | Action::Decide { .. } => None,
        }
    }
}

/// The checks of a value that need no state: the members it names are members, in ascending
/// order, each once, and a seal value pins exactly `n - f` reports.
pub fn well_formed(consortium: &Consortium, value: &Value) -> bool {
    fn ascending(consortium: &Consortium, members: impl Iterator<Item = MemberIndex>) -> bool {
        let mut last = 0;
        for m in members {
            if m <= last || !consortium.is_member(m) {
                return false;
            }
            last = m;
        }
        true
    }
    match value {
        Value::SetupKeys { .. } => true,
        Value::SetupRetry { next } => ascending(consortium, next.iter().copied()),
        Value::Seal { reports } => {
            reports.len() == consortium.reports_pinned()
                && ascending(consortium, reports.iter().map(|(m, _)| *m))
        }
    }
}
