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
    tasks.revoke(&alive, now + TimeDelta::minutes(10));
    tasks.revoke(&gone, now - TimeDelta::minutes(2));
    // Within the grace after its task's expiry: still held.
    tasks.revoke(&just_gone, now - TimeDelta::seconds(5));
    assert!(tasks.is_revoked(&gone) && tasks.is_revoked(&alive));

    tasks.end_expired(now).await.unwrap();
    assert!(tasks.is_revoked(&alive));
    assert!(tasks.is_revoked(&just_gone));
    assert!(!tasks.is_revoked(&gone));
    assert_eq!(tasks.revoked_in_memory(), 2);
}
