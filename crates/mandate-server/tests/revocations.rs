//! Revoked credential ids are held in memory only while their task could
//! still present a credential.

#![allow(clippy::unwrap_used)]

mod common;

use chrono::{TimeDelta, Utc};

#[tokio::test]
async fn revoked_ids_are_forgotten_once_their_task_has_expired() {
    let (state, _dir) = common::state().await;
    let tasks = state.tasks();
    let now = Utc::now();
    let alive = ["alive".to_owned()];
    let gone = ["gone".to_owned()];
    let just_gone = ["just-gone".to_owned()];
    tasks
        .credentials()
        .revoke(&alive, now + TimeDelta::minutes(10));
    tasks
        .credentials()
        .revoke(&gone, now - TimeDelta::minutes(2));
    // Within the grace after its task's expiry: still held.
    tasks
        .credentials()
        .revoke(&just_gone, now - TimeDelta::seconds(5));
    assert!(tasks.credentials().is_revoked(&gone) && tasks.credentials().is_revoked(&alive));

    tasks.credentials().end_expired(now).await.unwrap();
    assert!(tasks.credentials().is_revoked(&alive));
    assert!(tasks.credentials().is_revoked(&just_gone));
    assert!(!tasks.credentials().is_revoked(&gone));
    assert_eq!(tasks.credentials().revoked_in_memory(), 2);
}
