-- efsray schema, version 1: market data, backtest runs, checkpoint catalog, sync state.
-- Everything lives in the schema "efsray", so it never collides with the team's own tables.

CREATE SCHEMA IF NOT EXISTS efsray;

-- One row: this database's identity. Stores keep their import watermark per database id,
-- so pointing a store at another database starts that import from scratch.
CREATE TABLE efsray.instance (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    id         uuid NOT NULL DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO efsray.instance DEFAULT VALUES;

-- OHLCV bars. txid is the writing transaction (set on insert by default, on update by the
-- trigger below): the import to the store reads rows with txid >= its watermark, which is a
-- snapshot xmin, so a row committed late by a long transaction is never skipped.
CREATE TABLE efsray.market_bars (
    symbol    text NOT NULL,
    timeframe text NOT NULL,
    ts        timestamptz NOT NULL,
    open      double precision NOT NULL,
    high      double precision NOT NULL,
    low       double precision NOT NULL,
    close     double precision NOT NULL,
    volume    double precision NOT NULL,
    txid      xid8 NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (symbol, timeframe, ts)
);
CREATE INDEX market_bars_txid ON efsray.market_bars (txid);

CREATE FUNCTION efsray.stamp_txid() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.txid := pg_current_xact_id();
    RETURN NEW;
END
$$;
CREATE TRIGGER market_bars_stamp_txid BEFORE UPDATE ON efsray.market_bars
    FOR EACH ROW EXECUTE FUNCTION efsray.stamp_txid();

-- Backtest runs, synced from the store (the store is the source of truth).
CREATE TABLE efsray.backtest_runs (
    run_id               text PRIMARY KEY,
    strategy_id          text NOT NULL,
    parameters           jsonb NOT NULL DEFAULT '{}'::jsonb,
    metrics              jsonb NOT NULL DEFAULT '{}'::jsonb,
    market_data_versions jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at           timestamptz NOT NULL,
    store_path           text,
    synced_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX backtest_runs_strategy ON efsray.backtest_runs (strategy_id, created_at);

-- Checkpoint catalog (metadata only: the bytes stay on the shared volume).
CREATE TABLE efsray.checkpoints (
    model_id   text NOT NULL,
    version    integer NOT NULL CHECK (version >= 1),
    created_at timestamptz NOT NULL,
    metadata   jsonb NOT NULL DEFAULT '{}'::jsonb,
    size_bytes bigint,
    checksum   text,
    store_path text,
    removed_at timestamptz,  -- set when retention removed the version from the store
    synced_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_id, version)
);

CREATE TABLE efsray.checkpoint_aliases (
    model_id  text NOT NULL,
    alias     text NOT NULL,
    version   integer NOT NULL,
    synced_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_id, alias)
);

-- Positions of the store -> database syncs, per store and stream (a JSON object whose
-- shape belongs to the stream: a timestamp watermark, an exported store version, ...).
CREATE TABLE efsray.sync_state (
    store_id   text NOT NULL,
    stream     text NOT NULL,
    position   jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (store_id, stream)
);
