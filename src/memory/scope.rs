//! Whose memory an extracted operation is: the user's own (`user/<user>/memories/...`) or a
//! peer's (`user/<user>/peers/<peer_id>/memories/...`), as 0.5.2 decides it. A peer is the
//! `peer_id` of a user-role message of the archive; peer memories need the session's
//! `memory_policy.peer.enabled` (default on), the user's own need `self.enabled` (default on).
//! An operation with message `ranges` (events) belongs to whoever wrote the user messages in
//! them (one file each when several did); any other names its peer with `peer_id`, or is the
//! user's. What cannot be placed is skipped with the reason, never guessed.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::model::Operation;
use super::types::{clean_segment, MemoryType};

/// Who wrote one archived message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Speaker {
    /// Not a user-role message (assistant, tool, system).
    Other,
    /// The user themself.
    User,
    /// A peer of the user (the message's `peer_id`).
    Peer(String),
}

/// Who a memory belongs to: `None` = the user, `Some(peer_id)` = that peer.
pub type Owner = Option<String>;

/// 0.5.2's internal name for "the user" where a peer id is expected.
const SELF_PEER: &str = "__self";

/// A usable peer id (the segment rules of the API), else `None`.
fn clean_peer(raw: &str) -> Option<String> {
    let p = raw.trim();
    clean_segment(p).filter(|c| c == p && p != SELF_PEER)
}

/// The speakers of archived messages, by index.
pub fn speakers(messages: &[Value]) -> Vec<Speaker> {
    messages
        .iter()
        .map(|m| match (m["role"].as_str(), m["peer_id"].as_str()) {
            (Some("user"), Some(p)) if !p.trim().is_empty() => match clean_peer(p) {
                Some(p) => Speaker::Peer(p),
                // An unusable peer id is nobody's: never the user's by accident.
                None => Speaker::Other,
            },
            (Some("user"), _) => Speaker::User,
            _ => Speaker::Other,
        })
        .collect()
}

/// What one extraction may write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    pub allow_self: bool,
    pub peer_enabled: bool,
    /// Peers of the archive's messages (empty when peer memory is off).
    pub peers: Vec<String>,
}

impl Default for Scope {
    fn default() -> Self {
        Scope {
            allow_self: true,
            peer_enabled: true,
            peers: Vec::new(),
        }
    }
}

impl Scope {
    /// From a normalised `memory_policy` and the archive's speakers.
    pub fn new(policy: &Value, speakers: &[Speaker]) -> Scope {
        let on = |k: &str| policy[k]["enabled"].as_bool() != Some(false);
        let peer_enabled = on("peer");
        let mut peers: Vec<String> = if peer_enabled {
            speakers
                .iter()
                .filter_map(|s| match s {
                    Speaker::Peer(p) => Some(p.clone()),
                    _ => None,
                })
                .collect()
        } else {
            Vec::new()
        };
        peers.sort();
        peers.dedup();
        Scope {
            allow_self: on("self"),
            peer_enabled,
            peers,
        }
    }

    /// Nothing may be written (self off and no peer in the archive).
    pub fn is_empty(&self) -> bool {
        !self.allow_self && self.peers.is_empty()
    }

    /// Every owner this extraction may write for.
    pub fn owners(&self) -> Vec<Owner> {
        let mut out = Vec::new();
        if self.allow_self {
            out.push(None);
        }
        out.extend(self.peers.iter().cloned().map(Some));
        out
    }

    /// Where memories of `t` from `op` go (one owner or several), or why nowhere.
    pub fn targets(
        &self,
        t: &MemoryType,
        op: &Operation,
        speakers: &[Speaker],
    ) -> Result<Vec<Owner>, String> {
        if !t.peer_enabled {
            return if self.allow_self {
                Ok(vec![None])
            } else {
                Err("self memory is off for this session".into())
            };
        }
        if let Some(ranges) = op.fields.get("ranges").and_then(Value::as_str) {
            return self.range_targets(ranges, speakers);
        }
        match op.peer_id.as_deref() {
            Some(SELF_PEER) | None if self.allow_self => Ok(vec![None]),
            Some(SELF_PEER) => Err("self memory is off for this session".into()),
            Some(raw) => self.peer_target(raw).map(|p| vec![Some(p)]),
            None => match self.peers.as_slice() {
                [only] => Ok(vec![Some(only.clone())]),
                [] => Err("no writable owner: self memory is off and no peer spoke".into()),
                _ => Err("the memory names no peer_id and several peers spoke".into()),
            },
        }
    }

    fn peer_target(&self, raw: &str) -> Result<String, String> {
        let Some(p) = clean_peer(raw) else {
            return Err(format!("peer_id {raw:?} is not a usable id"));
        };
        if !self.peer_enabled {
            return Err("peer memory is off for this session".into());
        }
        if !self.peers.contains(&p) {
            return Err(format!("peer {p:?} wrote none of this archive's messages"));
        }
        Ok(p)
    }

    /// The owners of the user messages in `ranges` ("0-3,7").
    fn range_targets(&self, ranges: &str, speakers: &[Speaker]) -> Result<Vec<Owner>, String> {
        let bad = || format!("message ranges {ranges:?} are malformed or out of bounds");
        let mut indexes = Vec::new();
        for part in ranges.split(',') {
            let part = part.trim();
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (part, part),
            };
            let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) else {
                return Err(bad());
            };
            if a > b || b >= speakers.len() || b - a > 10_000 {
                return Err(bad());
            }
            indexes.extend(a..=b);
        }
        let mut owners: Vec<Owner> = Vec::new();
        let mut refusals: Vec<String> = Vec::new();
        let mut any_user = false;
        for i in indexes {
            let owner = match &speakers[i] {
                Speaker::Other => continue,
                Speaker::User => {
                    any_user = true;
                    if self.allow_self {
                        None
                    } else {
                        refusals.push("self memory is off for this session".into());
                        continue;
                    }
                }
                Speaker::Peer(p) => {
                    any_user = true;
                    match self.peer_target(p) {
                        Ok(p) => Some(p),
                        Err(e) => {
                            refusals.push(e);
                            continue;
                        }
                    }
                }
            };
            if !owners.contains(&owner) {
                owners.push(owner);
            }
        }
        if !owners.is_empty() {
            return Ok(owners);
        }
        if !any_user {
            // Ranges of assistant messages only: the one speaker of the archive, if unique.
            let all = self.owners_of(speakers);
            return match all.as_slice() {
                [only] => Ok(vec![only.clone()]),
                [] => Err("no writable owner in this archive".into()),
                _ => Err("the ranges hold no user message and several people spoke".into()),
            };
        }
        Err(refusals
            .into_iter()
            .next()
            .unwrap_or_else(|| "no writable owner".into()))
    }

    /// The writable owners among all speakers, in order of appearance.
    fn owners_of(&self, speakers: &[Speaker]) -> Vec<Owner> {
        let mut out: Vec<Owner> = Vec::new();
        for s in speakers {
            let o = match s {
                Speaker::User if self.allow_self => None,
                Speaker::Peer(p) if self.peers.contains(p) => Some(p.clone()),
                _ => continue,
            };
            if !out.contains(&o) {
                out.push(o);
            }
        }
        out
    }
}

/// The owner's space inside the account: `user/<user>` or `user/<user>/peers/<peer>`.
pub fn owner_root(user: &str, owner: &Owner) -> String {
    match owner {
        None => format!("user/{user}"),
        Some(p) => format!("user/{user}/peers/{p}"),
    }
}

/// The owner of a memory path inside the account and the path below the owner's space.
pub fn split_owner<'a>(user: &str, rel: &'a str) -> Option<(Owner, &'a str)> {
    let rest = rel.strip_prefix(&format!("user/{user}/"))?;
    if let Some(peer_rest) = rest.strip_prefix("peers/") {
        let (peer, below) = peer_rest.split_once('/')?;
        return Some((Some(peer.to_string()), below));
    }
    Some((None, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    fn op(peer: Option<&str>, ranges: Option<&str>) -> Operation {
        let mut fields = Map::new();
        if let Some(r) = ranges {
            fields.insert("ranges".into(), json!(r));
        }
        Operation {
            op: "add".into(),
            memory_type: "events".into(),
            uri: None,
            peer_id: peer.map(str::to_string),
            fields,
        }
    }

    #[test]
    fn owners_follow_policy_messages_and_ranges() {
        let msgs = vec![
            json!({"role": "user", "content": "hi"}),
            json!({"role": "user", "peer_id": "bob"}),
            json!({"role": "assistant"}),
            json!({"role": "user", "peer_id": "a/b"}),
        ];
        let sp = speakers(&msgs);
        assert_eq!(sp[1], Speaker::Peer("bob".into()));
        assert_eq!(sp[3], Speaker::Other);
        let types = super::super::types::builtin();
        let events = types.iter().find(|t| t.name == "events").unwrap();
        let all = Scope::new(&Value::Null, &sp);
        assert_eq!(all.peers, vec!["bob".to_string()]);
        assert_eq!(all.targets(events, &op(None, None), &sp), Ok(vec![None]));
        assert_eq!(
            all.targets(events, &op(Some("bob"), None), &sp),
            Ok(vec![Some("bob".into())])
        );
        assert!(all.targets(events, &op(Some("eve"), None), &sp).is_err());
        assert_eq!(
            all.targets(events, &op(None, Some("0-1")), &sp),
            Ok(vec![None, Some("bob".into())])
        );
        assert_eq!(
            all.targets(events, &op(None, Some("1")), &sp),
            Ok(vec![Some("bob".into())])
        );
        assert!(all.targets(events, &op(None, Some("0-9")), &sp).is_err());
        // Assistant-only ranges with two speakers: ambiguous.
        assert!(all.targets(events, &op(None, Some("2")), &sp).is_err());
        let no_self = Scope::new(&json!({"self": {"enabled": false}}), &sp);
        assert_eq!(
            no_self.targets(events, &op(None, None), &sp),
            Ok(vec![Some("bob".into())])
        );
        assert!(no_self.targets(events, &op(None, Some("0")), &sp).is_err());
        let no_peer = Scope::new(&json!({"peer": {"enabled": false}}), &sp);
        assert!(no_peer.peers.is_empty());
        assert!(no_peer
            .targets(events, &op(Some("bob"), None), &sp)
            .is_err());
        assert!(Scope::new(
            &json!({"self": {"enabled": false}, "peer": {"enabled": false}}),
            &sp
        )
        .is_empty());
        assert_eq!(
            split_owner("alice", "user/alice/peers/bob/memories/profile.md"),
            Some((Some("bob".into()), "memories/profile.md"))
        );
        assert_eq!(
            split_owner("alice", "user/alice/memories/profile.md"),
            Some((None, "memories/profile.md"))
        );
        assert_eq!(
            owner_root("alice", &Some("bob".into())),
            "user/alice/peers/bob"
        );
    }
}
