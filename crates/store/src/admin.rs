//! Removing what a benchmark or test run put in a shared server: a PostgreSQL schema
//! or every Redis key under a prefix. Kept apart from the stores themselves because no
//! waiter ever needs it.

use crate::StoreError;

#[cfg(feature = "postgres")]
/// Drops `schema` (and everything in it) from the database at `url`, if it exists.
///
/// # Errors
/// [`StoreError::Config`] for an invalid schema name or URL, [`StoreError::Unavailable`]
/// when the server cannot be reached or refuses.
pub async fn drop_postgres_schema(url: &str, schema: &str) -> Result<(), StoreError> {
    let valid = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.as_bytes()[0].is_ascii_digit();
    if !valid {
        return Err(StoreError::Config(format!(
            "invalid schema name {schema:?}"
        )));
    }
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| StoreError::unavailable(format!("PostgreSQL: {e}")))?;
    let driver = tokio::spawn(connection);
    let result = client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .map_err(|e| StoreError::unavailable(format!("PostgreSQL: {e}")));
    drop(client);
    if let Ok(Err(e)) = driver.await {
        tracing::debug!("PostgreSQL admin connection closed with: {e}");
    }
    result
}

#[cfg(feature = "redis")]
/// Deletes every key starting with `prefix` from the Redis server at `url`.
///
/// # Errors
/// [`StoreError::Config`] for an empty prefix or a bad URL, [`StoreError::Unavailable`]
/// when the server cannot be reached.
pub async fn delete_redis_prefix(url: &str, prefix: &str) -> Result<u64, StoreError> {
    if prefix.is_empty() {
        return Err(StoreError::Config(
            "refusing to delete every key: the prefix is empty".into(),
        ));
    }
    let unavailable = |e: redis::RedisError| StoreError::unavailable(format!("Redis: {e}"));
    let client = redis::Client::open(url)
        .map_err(|e| StoreError::Config(format!("invalid Redis URL: {e}")))?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(unavailable)?;
    let mut cursor = 0u64;
    let mut deleted = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if !keys.is_empty() {
            let n: u64 = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            deleted += n;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}
