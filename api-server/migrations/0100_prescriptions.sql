-- 0100: prescriptions (endpoints in src/prescriptions/).
--
-- Every clinical field is an AES-256-GCM ciphertext written by the application, like the patient
-- columns (AAD: 'prescriptions', row id, column): medication name and code, dose, route, frequency,
-- notes, the override reason and the JSON list of interactions found at creation. `phi_key_id`
-- names the key of all of the row's ciphertexts (`caduceus-api rotate-keys`). Plain columns are
-- identifiers, status and dates only. The interaction check decrypts the patient's (few) active
-- prescriptions in the application and matches them against the reference data of 0101.

CREATE TABLE prescriptions (
    id              uuid PRIMARY KEY,               -- UUIDv7: time ordered, used as the list cursor
    patient_id      uuid        NOT NULL REFERENCES patients (id),
    prescriber_id   uuid        NOT NULL REFERENCES users (id),
    phi_key_id      text        NOT NULL,
    medication_name bytea       NOT NULL,
    medication_code bytea       NULL,
    dose            bytea       NOT NULL,
    route           bytea       NOT NULL,
    frequency       bytea       NOT NULL,
    notes           bytea       NULL,
    override_reason bytea       NULL,
    interactions    bytea       NULL,
    duration_days   integer     NOT NULL CHECK (duration_days BETWEEN 1 AND 365),
    -- 'active' until discontinued; an active prescription past ends_at is reported as 'completed'
    status          text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'discontinued')),
    starts_at       timestamptz NOT NULL,
    ends_at         timestamptz NOT NULL,
    discontinued_at timestamptz NULL,
    discontinued_by uuid        NULL REFERENCES users (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT prescriptions_ends_after_start CHECK (ends_at > starts_at),
    CONSTRAINT prescriptions_discontinued_consistent
        CHECK ((status = 'discontinued') = (discontinued_at IS NOT NULL))
);
CREATE INDEX prescriptions_patient_idx ON prescriptions (patient_id, id);
CREATE INDEX prescriptions_active_idx ON prescriptions (patient_id) WHERE status = 'active';
CREATE INDEX prescriptions_prescriber_idx ON prescriptions (prescriber_id, id);
CREATE INDEX prescriptions_phi_key_idx ON prescriptions (phi_key_id);
