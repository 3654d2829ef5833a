DROP TRIGGER customer_tokens_announce_change ON fleet.customer_tokens;
DROP FUNCTION fleet.announce_token_change();
