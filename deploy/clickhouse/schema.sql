-- Wardline flow storage. The aggregator runs these same statements on start (see
-- aggregator/src/sink/clickhouse.rs, schema_statements; a test keeps both equal), so
-- applying this file by hand is only needed to prepare a server in advance.
--
-- Runs on ClickHouse 18.16 (Debian's package) and current releases: no IPv4/IPv6,
-- DateTime64, TTL or LowCardinality. Rows are keyed (sensor_id, batch_id, idx): a re-sent
-- batch writes the same keys, ReplacingMergeTree collapses them on merge, and every read
-- must use FINAL (or GROUP BY the key) so totals never count a duplicate before that, e.g.
--   SELECT count(), sum(bytes_ab + bytes_ba) FROM wardline.flows FINAL;
-- vlan 0 means untagged. day/first_seen derive from first_seen_us (microseconds, UTC).

CREATE DATABASE IF NOT EXISTS wardline;

CREATE TABLE IF NOT EXISTS wardline.flows
(
    batch_id      String,
    idx           UInt32,
    sensor_id     String,
    site          String,
    day           Date,
    first_seen    DateTime,
    first_seen_us UInt64,
    last_seen_us  UInt64,
    ip_proto      UInt8,
    vlan          UInt16,
    a_mac         String,
    b_mac         String,
    a_ip          String,
    b_ip          String,
    a_port        UInt16,
    b_port        UInt16,
    packets_ab    UInt64,
    packets_ba    UInt64,
    bytes_ab      UInt64,
    bytes_ba      UInt64,
    tcp_flags_ab  UInt8,
    tcp_flags_ba  UInt8,
    app           String,
    end_reason    String
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (sensor_id, batch_id, idx);
