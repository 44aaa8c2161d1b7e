-- 0170: every stored blind index records the blind-index key that made it, so the blind-index
-- key can be rotated (`docs/api.md`, "Rotating the blind-index key").
--
-- The PHI key ring may now hold several blind-index keys by id with an active one
-- (`docs/contracts.md`, "Key files"); a ring of the one-key form (`blind_index_key`) has one key,
-- whose id is `legacy`. Every index written before this migration was made with that key: the
-- columns below are `legacy` for them, and stay `legacy` by default for rows a pod of the
-- previous release writes during a rolling upgrade (it only knows the one-key form, so its key
-- is `legacy`). This release always writes the id of the active key.
--
-- `caduceus-api rotate-blind-index` recomputes, in batches, the indexes of the rows whose
-- `bidx_key_id` is not the active key (patients: mrn_bidx and name_dob_bidx from the decrypted
-- MRN, family name and birth date; users: email_bidx from the decrypted e-mail). Until then
-- lookups and duplicate checks match a value under every key of the ring.
--
-- Values the API cannot recompute (it never stores their input) are only counted and let go:
-- login_attempts (failure counters of e-mails, 15-minute windows; an ended window under an old
-- key is deleted by the command) and mfa_recovery_codes (an unused code under an old key keeps
-- working while that key is in the ring; new codes replace it).

ALTER TABLE patients ADD COLUMN bidx_key_id text NOT NULL DEFAULT 'legacy';
-- rows with email_bidx IS NULL (plaintext e-mails from before 0102) get the active key's id
-- when they are converted
ALTER TABLE users ADD COLUMN bidx_key_id text NOT NULL DEFAULT 'legacy';
ALTER TABLE login_attempts ADD COLUMN bidx_key_id text NOT NULL DEFAULT 'legacy';
ALTER TABLE mfa_recovery_codes ADD COLUMN bidx_key_id text NOT NULL DEFAULT 'legacy';

-- the rotation walks the rows not yet under the active key (by id, like rotate-keys)
CREATE INDEX patients_bidx_key_idx ON patients (bidx_key_id);
CREATE INDEX users_bidx_key_idx ON users (bidx_key_id);
