//! Skills, the third context type (docs/API.md, Skills): Agent Skills packages — a `SKILL.md`
//! (YAML front matter + Markdown instructions) with optional scripts and resources — installed
//! under the caller's `viking://user/{uid}/skills` or the account's `viking://agent/skills`,
//! summarised (L0 = header fields, L1 = instructions), indexed as `context_type: "skill"`.
//!
//! Blocking domain logic over `&dyn Storage`; uploaded archives are unpacked by the ingestion
//! sandbox (`ingest::package`). Jobs in `jobs::skills` run it.

pub mod find;
pub mod format;
pub mod store;
