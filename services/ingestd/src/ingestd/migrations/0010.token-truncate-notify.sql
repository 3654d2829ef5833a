-- TRUNCATE fires no row trigger: without this a truncated token table left every cached token
-- working until the cache's TTL. A statement-level trigger announces it with the payload 'all',
-- which every ingestd process's token cache reads as "drop everything" (any payload that is not
-- a token hash does).
-- depends: 0009.storage-conversion

CREATE FUNCTION fleet.announce_token_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('fleet_tokens', 'all');
    RETURN NULL;
END
$$;

CREATE TRIGGER customer_tokens_announce_truncate
AFTER TRUNCATE ON fleet.customer_tokens
FOR EACH STATEMENT EXECUTE FUNCTION fleet.announce_token_truncate();
