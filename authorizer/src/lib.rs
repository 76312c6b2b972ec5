//! The API Gateway authorizer (DESIGN §3.1, §5): key verification with a 30-second cache and
//! revocation through the epoch. Lands with the authorizer issue; the key format, hashing and the
//! `KeyStore` port it uses live in `meter-model` already.
