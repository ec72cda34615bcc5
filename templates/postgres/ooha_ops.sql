-- Schema of database ooha_ops: the rollout engine's lock, journals and release ledger
-- (docs/architecture.md "Lock", "Journal", "Release ledger"; the records are the pure types of
-- ooha/rollout/lock.py, journal.py and ledger.py; read and written by ooha/rollout/live/store.py).
-- Applied by the postgres layer (ooha/layers/postgres.py ops_database) on the Patroni leader,
-- as the postgres superuser, in one transaction.  Idempotent: every statement may run again;
-- a later version adds what it needs (ADD COLUMN IF NOT EXISTS ...) and bumps the comment at
-- the end (ooha/facts/ooha_ops.py OPS_SCHEMA_COMMENT), which makes the layer apply it again.
-- Times are epoch seconds (double precision), as in the pure types: the lock's fencing compares
-- the heartbeat it read, which a timestamp's microsecond rounding would not reproduce.

-- One row at most (the primary key can only be true): who runs a rollout now.
CREATE TABLE IF NOT EXISTS rollout_lock (
    id            boolean PRIMARY KEY DEFAULT true CHECK (id),
    rollout_id    text NOT NULL,
    token         text NOT NULL,              -- random per acquisition; every write of the holder is WHERE token = <its own>
    holder        text NOT NULL,              -- user@controller
    pid           integer NOT NULL,
    command       text NOT NULL,              -- "patch 9.3.1.2" / "rollback"
    acquired_at   double precision NOT NULL,
    heartbeat_at  double precision NOT NULL,
    stale_after_s double precision NOT NULL,
    phase         text NOT NULL DEFAULT ''
);

-- One row per rollout: the summary (ooha.rollout.ledger.rollout_record) and the whole journal.
CREATE TABLE IF NOT EXISTS rollout (
    rollout_id text PRIMARY KEY,
    kind       text NOT NULL,                 -- patch / rollback
    target     jsonb NOT NULL,                -- ImageRef.to_dict()
    status     text NOT NULL,                 -- ooha.rollout.journal.Status
    started    double precision NOT NULL,
    ended      double precision,
    who        text NOT NULL DEFAULT '',
    reason     text NOT NULL DEFAULT '',
    journal    jsonb NOT NULL                 -- Journal.to_dict(), format 1
);
CREATE INDEX IF NOT EXISTS rollout_status_started ON rollout (status, started DESC);
CREATE INDEX IF NOT EXISTS rollout_started ON rollout (started DESC);

-- One row per Document Server node: what it runs, since when, by which rollout, what before.
CREATE TABLE IF NOT EXISTS node_release (
    node             text PRIMARY KEY,
    current          jsonb NOT NULL,          -- ImageRef.to_dict()
    since            double precision NOT NULL,
    rollout_id       text,
    previous         jsonb,                   -- ImageRef.to_dict() or NULL
    healthy_verified boolean NOT NULL DEFAULT false
);
-- Schema 2: whether the previous image had passed health + soak here (rollback.py skips the
-- compat gate for it); kept when a rollout replaces the current one.
ALTER TABLE node_release ADD COLUMN IF NOT EXISTS previous_verified boolean NOT NULL DEFAULT false;

-- Last: the version this file makes (the layer compares it with OPS_SCHEMA_COMMENT).
COMMENT ON DATABASE ooha_ops IS 'ooha_ops schema 2';
