DROP TRIGGER customer_tokens_announce_truncate ON fleet.customer_tokens;
DROP FUNCTION fleet.announce_token_truncate();
