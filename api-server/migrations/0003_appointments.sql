-- 0003: appointments table (endpoints live in src/appointments/, added by migrations >= 0100).
--
-- `start`/`end` are SQL keywords, so the columns are `start_at`/`end_at`. `reason` is PHI and holds
-- a ciphertext (AAD: 'appointments', row id, 'reason'); `phi_key_id` as in `patients`.
-- The exclusion constraint refuses overlapping non-cancelled bookings per practitioner, so double
-- booking is impossible even under concurrent requests (SQLSTATE 23P01 -> HTTP 409).

CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE appointments (
    id              uuid PRIMARY KEY,
    patient_id      uuid        NOT NULL REFERENCES patients (id),
    practitioner_id uuid        NOT NULL REFERENCES users (id),
    start_at        timestamptz NOT NULL,
    end_at          timestamptz NOT NULL,
    reason          bytea       NULL,
    phi_key_id      text        NOT NULL,
    status          text        NOT NULL DEFAULT 'booked'
                    CHECK (status IN ('booked', 'arrived', 'fulfilled', 'cancelled', 'noshow')),
    created_by      uuid        NOT NULL REFERENCES users (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT appointments_end_after_start CHECK (end_at > start_at),
    CONSTRAINT appointments_no_overlap EXCLUDE USING gist (
        practitioner_id WITH =,
        tstzrange(start_at, end_at, '[)') WITH &&
    ) WHERE (status <> 'cancelled')
);
CREATE INDEX appointments_patient_idx ON appointments (patient_id, start_at);
CREATE INDEX appointments_practitioner_patient_idx ON appointments (practitioner_id, patient_id);
CREATE INDEX appointments_phi_key_idx ON appointments (phi_key_id);
