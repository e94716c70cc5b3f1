//! The embedded backend against the shared conformance suite.

use mailaudit_store::{store_conformance_tests, SqliteStore};
use std::ops::{Deref, DerefMut};

struct Fresh {
    store: SqliteStore,
    _dir: tempfile::TempDir,
}

impl Deref for Fresh {
    type Target = SqliteStore;
    fn deref(&self) -> &SqliteStore {
        &self.store
    }
}

impl DerefMut for Fresh {
    fn deref_mut(&mut self) -> &mut SqliteStore {
        &mut self.store
    }
}

fn fresh() -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    Fresh {
        store: SqliteStore::open(dir.path()).unwrap(),
        _dir: dir,
    }
}

store_conformance_tests!(fresh());
