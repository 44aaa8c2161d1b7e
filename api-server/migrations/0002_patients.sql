-- 0002: patient records and care teams.
--
-- Every PHI column holds an AES-256-GCM ciphertext produced by the application
-- (`crypto::KeyRing::encrypt`): key id + nonce + ciphertext, with AAD binding it to
-- ('patients', row id, column). `phi_key_id` is the key all of the row's ciphertexts use, so
-- `caduceus-api rotate-keys` can find rows still under an older key.
-- Lookups never decrypt: `mrn_bidx` and `name_dob_bidx` are HMAC-SHA256 blind indexes.

CREATE TABLE patients (
    id                uuid PRIMARY KEY,             -- UUIDv7: time ordered, used as the list cursor
    mrn_bidx          bytea       NOT NULL,
    name_dob_bidx     bytea       NOT NULL,
    phi_key_id        text        NOT NULL,
    mrn               bytea       NOT NULL,
    given_name        bytea       NOT NULL,
    family_name       bytea       NOT NULL,
    birth_date        bytea       NOT NULL,
    sex               bytea       NOT NULL,
    phone             bytea       NULL,
    email             bytea       NULL,
    address           bytea       NULL,
    allergies         bytea       NOT NULL,
    medications       bytea       NOT NULL,
    conditions        bytea       NOT NULL,
    emergency_contact bytea       NULL,
    created_by        uuid        NOT NULL REFERENCES users (id),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    -- soft delete: the row (ciphertext only) is kept for the retention period
    deleted_at        timestamptz NULL,
    deleted_by        uuid        NULL REFERENCES users (id)
);
-- An MRN is never reused, not even after a soft delete.
CREATE UNIQUE INDEX patients_mrn_bidx_key ON patients (mrn_bidx);
CREATE INDEX patients_name_dob_bidx_idx ON patients (name_dob_bidx) WHERE deleted_at IS NULL;
CREATE INDEX patients_phi_key_idx ON patients (phi_key_id);
CREATE INDEX patients_created_by_idx ON patients (created_by);

-- A patient account is linked to at most one record, and a record to at most one account.
ALTER TABLE users ADD CONSTRAINT users_patient_fk FOREIGN KEY (patient_id) REFERENCES patients (id);
CREATE UNIQUE INDEX users_patient_id_key ON users (patient_id) WHERE patient_id IS NOT NULL;

-- Explicit care-team assignments (POST /patients/{id}/care-team). Registering a patient or
-- having an appointment with them also puts a physician/nurse in the care team (see rbac.rs).
CREATE TABLE care_team (
    patient_id uuid        NOT NULL REFERENCES patients (id),
    user_id    uuid        NOT NULL REFERENCES users (id),
    added_by   uuid        NOT NULL REFERENCES users (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (patient_id, user_id)
);
CREATE INDEX care_team_user_idx ON care_team (user_id);
