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

-- Hours that received flow rows, recorded on every insert into flows (materialized view).
-- The aggregator's rollup job recomputes those hours from flows FINAL, so a re-sent batch
-- never counts twice in a rollup (decision 0023). Monthly partitions like flows: one
-- insert of old, buffered flows may span many days.
CREATE TABLE IF NOT EXISTS wardline.flows_hours_touched
(
    day        Date,
    hour       DateTime,
    touched_at DateTime
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (touched_at, hour);

CREATE MATERIALIZED VIEW IF NOT EXISTS wardline.flows_hours_touched_mv TO wardline.flows_hours_touched
AS SELECT toDate(toStartOfHour(first_seen)) AS day, toStartOfHour(first_seen) AS hour, now() AS touched_at
FROM wardline.flows
GROUP BY day, hour;

-- Per device (MAC, per site) per hour. A device is either end of a flow: out = what it
-- sent, in = what it received. Rewritten whole per hour by the rollup job; the highest
-- version wins, so reads use FINAL.
CREATE TABLE IF NOT EXISTS wardline.device_hourly
(
    day         Date,
    hour        DateTime,
    site        String,
    mac         String,
    ip          String,
    flows       UInt64,
    packets_out UInt64,
    packets_in  UInt64,
    bytes_out   UInt64,
    bytes_in    UInt64,
    peers       UInt64,
    version     UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY day
ORDER BY (hour, site, mac);

-- Per segment pair per hour: site, VLAN (0 = untagged) and the networks of both ends
-- (IPv4 /24, IPv6 /64), from the initiating end (a) to the responder (b).
CREATE TABLE IF NOT EXISTS wardline.segment_pair_hourly
(
    day     Date,
    hour    DateTime,
    site    String,
    vlan    UInt16,
    a_net   String,
    b_net   String,
    flows   UInt64,
    packets UInt64,
    bytes   UInt64,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY day
ORDER BY (hour, site, vlan, a_net, b_net);

-- How far the rollup job got (Unix time of the touched_at it reads from next pass).
CREATE TABLE IF NOT EXISTS wardline.rollup_watermark
(
    job        String,
    watermark  DateTime,
    written_at DateTime
)
ENGINE = ReplacingMergeTree(written_at)
ORDER BY job;

-- Policy violations, written by the policy engine (one row per violating flow and rule).
-- Keyed by violation_id so a re-sent write collapses like flows; read with FINAL.
-- severity: 1 low, 2 medium, 3 high, 4 critical.
CREATE TABLE IF NOT EXISTS wardline.policy_violations
(
    violation_id  String,
    day           Date,
    detected_at   DateTime,
    site          String,
    sensor_id     String,
    rule_id       String,
    rule_name     String,
    severity      UInt8,
    action        String,
    ip_proto      UInt8,
    vlan          UInt16,
    a_mac         String,
    b_mac         String,
    a_ip          String,
    b_ip          String,
    b_port        UInt16,
    app           String,
    bytes         UInt64,
    batch_id      String,
    idx           UInt32,
    detail        String
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (rule_id, violation_id);
