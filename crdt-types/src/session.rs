//! `Session`: the login session of CONTRACT §1: LWW fields, a max-register expiry, and a
//! revoked state that is the lattice top.

use crate::{DeltaCrdt, IdError, Lattice, LwwRegister, MaxRegister, Tag, validate_id};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Why a session operation was refused. The session is unchanged when an error is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The session was revoked; nothing can change it any more.
    #[error("session is revoked")]
    Revoked,
    /// The user id is not 1 to 256 bytes of UTF-8 without control characters.
    #[error("invalid user id: {0}")]
    InvalidUserId(IdError),
    /// An attribute name is not 1 to 256 bytes of UTF-8 without control characters.
    #[error("invalid attribute name: {0}")]
    InvalidAttr(IdError),
}

/// The fields of a session that has not been revoked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Fields {
    user_id: LwwRegister<String>,
    /// Attribute name to its JSON value as canonical text (bincode cannot encode
    /// `serde_json::Value`, and canonical text makes equal values equal bytes).
    attrs: BTreeMap<String, LwwRegister<String>>,
    expires_at_ms: MaxRegister<i64>,
}

/// A session (CONTRACT §1).
///
/// `user_id` and each attribute are last-writer-wins registers ordered by [`Stamp`]; the
/// expiry is a max register, so concurrent `touch`es keep the latest expiry; `revoke` is the
/// top of the lattice: joined with anything, a revoked session stays revoked and keeps no
/// data, so a logout wins over every concurrent or later update and never comes back.
///
/// Reads take the current time and see nothing when the session is expired or revoked.
///
/// [`Stamp`]: crate::Stamp
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Session(State);

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
enum State {
    Live(Fields),
    Revoked,
}

impl Default for Session {
    fn default() -> Self {
        Session(State::Live(Fields::default()))
    }
}

/// What a reader sees of a live session; serialised to JSON by the HTTP layer. Attribute
/// keys are sorted and values are parsed from canonical text, so equal sessions give
/// byte-identical JSON on every node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionView {
    /// The user the session belongs to, if set.
    pub user_id: Option<String>,
    /// The attributes, sorted by name.
    pub attrs: BTreeMap<String, serde_json::Value>,
    /// When the session expires (HLC wall time, Unix ms).
    pub expires_at_ms: i64,
}

/// Renders `value` as JSON text with object keys sorted at every level, whatever order the
/// `serde_json` build keeps them in.
pub fn canonical_json(value: &serde_json::Value) -> String {
    fn write(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                out.push('{');
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(k.clone()).to_string());
                    out.push(':');
                    write(v, out);
                }
                out.push('}');
            }
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(v, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

impl Session {
    /// A fresh session with no field set (it reads as absent until touched).
    pub fn new() -> Self {
        Self::default()
    }

    /// The revoked session, the lattice top; also the delta of [`Session::revoke`].
    pub fn revoked() -> Self {
        Session(State::Revoked)
    }

    fn fields_mut(&mut self) -> Result<&mut Fields, SessionError> {
        match &mut self.0 {
            State::Live(f) => Ok(f),
            State::Revoked => Err(SessionError::Revoked),
        }
    }

    fn live(&self) -> Option<&Fields> {
        match &self.0 {
            State::Live(f) => Some(f),
            State::Revoked => None,
        }
    }

    /// Sets the user id at the tag's stamp and returns the delta.
    pub fn set_user_id(&mut self, tag: Tag, user_id: &str) -> Result<Session, SessionError> {
        validate_id(user_id).map_err(SessionError::InvalidUserId)?;
        let f = self.fields_mut()?;
        let reg = f.user_id.set(tag, user_id.to_owned());
        Ok(Session(State::Live(Fields {
            user_id: reg,
            ..Fields::default()
        })))
    }

    /// Sets attribute `name` to `value` at the tag's stamp and returns the delta.
    pub fn set_attr(
        &mut self,
        tag: Tag,
        name: &str,
        value: &serde_json::Value,
    ) -> Result<Session, SessionError> {
        validate_id(name).map_err(SessionError::InvalidAttr)?;
        let f = self.fields_mut()?;
        let reg = f
            .attrs
            .entry(name.to_owned())
            .or_default()
            .set(tag, canonical_json(value));
        Ok(Session(State::Live(Fields {
            attrs: BTreeMap::from([(name.to_owned(), reg)]),
            ..Fields::default()
        })))
    }

    /// Extends the expiry to at least the tag's wall time plus `ttl_ms` (never shortens it)
    /// and returns the delta.
    pub fn touch(&mut self, tag: Tag, ttl_ms: u64) -> Result<Session, SessionError> {
        let f = self.fields_mut()?;
        let ttl = i64::try_from(ttl_ms).unwrap_or(i64::MAX);
        let reg = f
            .expires_at_ms
            .raise(tag.stamp.wall_ms().saturating_add(ttl));
        Ok(Session(State::Live(Fields {
            expires_at_ms: reg,
            ..Fields::default()
        })))
    }

    /// Revokes the session (logout) and returns the delta, the revoked session. Idempotent.
    pub fn revoke(&mut self) -> Session {
        self.0 = State::Revoked;
        Session::revoked()
    }

    /// Whether the session was revoked.
    pub fn is_revoked(&self) -> bool {
        matches!(self.0, State::Revoked)
    }

    /// The expiry in Unix ms (0 if never touched; `None` if revoked).
    pub fn expires_at_ms(&self) -> Option<i64> {
        self.live().map(|f| f.expires_at_ms.get())
    }

    /// Whether the session is readable at `now_ms`: not revoked and not yet expired.
    pub fn is_live(&self, now_ms: i64) -> bool {
        self.live().is_some_and(|f| now_ms < f.expires_at_ms.get())
    }

    /// The user id at `now_ms` (`None` if unset, expired or revoked).
    pub fn user_id(&self, now_ms: i64) -> Option<&str> {
        self.live_at(now_ms)?.user_id.get().map(String::as_str)
    }

    /// The attribute `name` at `now_ms` (`None` if unset, expired or revoked).
    pub fn attr(&self, now_ms: i64, name: &str) -> Option<serde_json::Value> {
        let text = self.live_at(now_ms)?.attrs.get(name)?.get()?;
        serde_json::from_str(text).ok()
    }

    /// The reader's view at `now_ms`, or `None` when expired or revoked (a 404).
    pub fn view(&self, now_ms: i64) -> Option<SessionView> {
        let f = self.live_at(now_ms)?;
        Some(SessionView {
            user_id: f.user_id.get().cloned(),
            attrs: f
                .attrs
                .iter()
                .filter_map(|(k, reg)| {
                    let v = serde_json::from_str(reg.get()?).ok()?;
                    Some((k.clone(), v))
                })
                .collect(),
            expires_at_ms: f.expires_at_ms.get(),
        })
    }

    fn live_at(&self, now_ms: i64) -> Option<&Fields> {
        self.live().filter(|f| now_ms < f.expires_at_ms.get())
    }
}

impl Lattice for Session {
    fn join(&mut self, other: Self) {
        match (&mut self.0, other.0) {
            (State::Revoked, _) => {}
            (s, State::Revoked) => *s = State::Revoked,
            (State::Live(a), State::Live(b)) => {
                a.user_id.join(b.user_id);
                for (k, reg) in b.attrs {
                    a.attrs.entry(k).or_default().join(reg);
                }
                a.expires_at_ms.join(b.expires_at_ms);
            }
        }
    }
}

impl DeltaCrdt for Session {}
