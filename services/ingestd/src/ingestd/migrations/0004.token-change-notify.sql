-- Every update or delete of a token row (revoke, rotate, a customer removed) is announced on the
-- `fleet_tokens` channel with the token's SHA-256 in hex, from whatever path made it: ingestd
-- processes keep a token cache and drop the entry when the notification arrives.
-- depends: 0002.hourly-dirty-buckets

CREATE FUNCTION fleet.announce_token_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('fleet_tokens', encode(OLD.token_hash, 'hex'));
    RETURN NULL;
END
$$;

CREATE TRIGGER customer_tokens_announce_change
AFTER UPDATE OR DELETE ON fleet.customer_tokens
FOR EACH ROW EXECUTE FUNCTION fleet.announce_token_change();
