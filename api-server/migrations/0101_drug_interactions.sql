-- 0101: reference data for the prescription interaction check (src/prescriptions/interactions.rs).
--
-- NOT a complete drug-interaction knowledge base: a small, documented set of well-known
-- interactions (README, "Prescriptions"). Names are matched after normalisation (lower case,
-- every non-alphanumeric character a space, whitespace collapsed); any run of 1-3 words of a
-- medication name or allergy entry is looked up, so "Warfarin sodium 5 mg" finds "warfarin".
-- Codes are matched against RxNorm ingredient RXCUIs.
--
-- Terms: a substance ('warfarin') or a drug class ('class:nsaid').

-- Ingredients we know, with their RxNorm ingredient code where listed.
CREATE TABLE drug_substances (
    name  text PRIMARY KEY CHECK (name ~ '^[a-z0-9]+( [a-z0-9]+)*$'),
    rxcui text NULL UNIQUE
);

-- Class membership of substances.
CREATE TABLE drug_class_members (
    class     text NOT NULL CHECK (class ~ '^[a-z0-9_]+$'),
    substance text NOT NULL REFERENCES drug_substances (name),
    PRIMARY KEY (class, substance)
);

-- Normalised names, brand names and abbreviations -> terms. A combination product maps to every
-- ingredient; a class word ('penicillins', 'sulfa') maps to the class.
CREATE TABLE drug_terms (
    alias text NOT NULL CHECK (alias ~ '^[a-z0-9]+( [a-z0-9]+)*$'),
    term  text NOT NULL,
    PRIMARY KEY (alias, term)
);

-- kind 'drug': a and b interact (symmetric). kind 'allergy': an allergy to a is a risk for drug
-- b (asymmetric, cross-reactivity). An allergy to a term the new drug has (its substance or one
-- of its classes) is always a major 'allergy' finding and needs no row here.
CREATE TABLE drug_interactions (
    id          integer PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('drug', 'allergy')),
    a           text NOT NULL,
    b           text NOT NULL,
    severity    text NOT NULL CHECK (severity IN ('major', 'moderate', 'minor')),
    description text NOT NULL,
    UNIQUE (kind, a, b)
);

INSERT INTO drug_substances (name, rxcui) VALUES
    ('warfarin', '11289'),
    ('aspirin', '1191'),
    ('ibuprofen', '5640'),
    ('naproxen', '7258'),
    ('diclofenac', '3355'),
    ('simvastatin', '36567'),
    ('atorvastatin', '83367'),
    ('clarithromycin', '21212'),
    ('erythromycin', '4053'),
    ('sildenafil', '136411'),
    ('tadalafil', '358263'),
    ('nitroglycerin', '4917'),
    ('isosorbide mononitrate', NULL),
    ('isosorbide dinitrate', NULL),
    ('lisinopril', '29046'),
    ('enalapril', '3827'),
    ('ramipril', '35296'),
    ('spironolactone', '9997'),
    ('eplerenone', '298869'),
    ('methotrexate', '6851'),
    ('trimethoprim', '10829'),
    ('sulfamethoxazole', '10180'),
    ('amoxicillin', '723'),
    ('ampicillin', '733'),
    ('penicillin g', '7980'),
    ('penicillin v', '7984'),
    ('cephalexin', '2231'),
    ('ceftriaxone', '2193'),
    ('clopidogrel', '32968'),
    ('omeprazole', '7646'),
    ('amiodarone', '703'),
    ('digoxin', '3407'),
    ('fluoxetine', '4493'),
    ('tramadol', '10689');

INSERT INTO drug_class_members (class, substance) VALUES
    ('nsaid', 'ibuprofen'), ('nsaid', 'naproxen'), ('nsaid', 'diclofenac'),
    ('pde5_inhibitor', 'sildenafil'), ('pde5_inhibitor', 'tadalafil'),
    ('nitrate', 'nitroglycerin'), ('nitrate', 'isosorbide mononitrate'), ('nitrate', 'isosorbide dinitrate'),
    ('ace_inhibitor', 'lisinopril'), ('ace_inhibitor', 'enalapril'), ('ace_inhibitor', 'ramipril'),
    ('potassium_sparing_diuretic', 'spironolactone'), ('potassium_sparing_diuretic', 'eplerenone'),
    ('penicillin', 'amoxicillin'), ('penicillin', 'ampicillin'), ('penicillin', 'penicillin g'), ('penicillin', 'penicillin v'),
    ('cephalosporin', 'cephalexin'), ('cephalosporin', 'ceftriaxone'),
    ('sulfonamide_antibiotic', 'sulfamethoxazole');

-- every substance is its own alias
INSERT INTO drug_terms (alias, term) SELECT name, name FROM drug_substances;

INSERT INTO drug_terms (alias, term) VALUES
    ('coumadin', 'warfarin'), ('jantoven', 'warfarin'),
    ('asa', 'aspirin'), ('acetylsalicylic acid', 'aspirin'),
    ('advil', 'ibuprofen'), ('motrin', 'ibuprofen'), ('nurofen', 'ibuprofen'),
    ('aleve', 'naproxen'), ('voltaren', 'diclofenac'),
    ('zocor', 'simvastatin'), ('lipitor', 'atorvastatin'),
    ('biaxin', 'clarithromycin'), ('klaricid', 'clarithromycin'),
    ('viagra', 'sildenafil'), ('revatio', 'sildenafil'), ('cialis', 'tadalafil'),
    ('glyceryl trinitrate', 'nitroglycerin'), ('gtn', 'nitroglycerin'), ('nitrostat', 'nitroglycerin'),
    ('imdur', 'isosorbide mononitrate'), ('isordil', 'isosorbide dinitrate'),
    ('zestril', 'lisinopril'), ('prinivil', 'lisinopril'), ('vasotec', 'enalapril'), ('altace', 'ramipril'),
    ('aldactone', 'spironolactone'), ('inspra', 'eplerenone'),
    ('trexall', 'methotrexate'),
    ('co trimoxazole', 'trimethoprim'), ('co trimoxazole', 'sulfamethoxazole'),
    ('cotrimoxazole', 'trimethoprim'), ('cotrimoxazole', 'sulfamethoxazole'),
    ('bactrim', 'trimethoprim'), ('bactrim', 'sulfamethoxazole'),
    ('septra', 'trimethoprim'), ('septra', 'sulfamethoxazole'),
    ('amoxil', 'amoxicillin'), ('augmentin', 'amoxicillin'),
    ('keflex', 'cephalexin'), ('rocephin', 'ceftriaxone'),
    ('plavix', 'clopidogrel'), ('prilosec', 'omeprazole'), ('losec', 'omeprazole'),
    ('cordarone', 'amiodarone'), ('pacerone', 'amiodarone'), ('lanoxin', 'digoxin'),
    ('prozac', 'fluoxetine'), ('ultram', 'tramadol'),
    -- class words (allergy lists usually name classes)
    ('penicillin', 'class:penicillin'), ('penicillins', 'class:penicillin'), ('pcn', 'class:penicillin'),
    ('cephalosporin', 'class:cephalosporin'), ('cephalosporins', 'class:cephalosporin'),
    ('sulfa', 'class:sulfonamide_antibiotic'), ('sulpha', 'class:sulfonamide_antibiotic'),
    ('sulfonamide', 'class:sulfonamide_antibiotic'), ('sulfonamides', 'class:sulfonamide_antibiotic'),
    ('nsaid', 'class:nsaid'), ('nsaids', 'class:nsaid'),
    ('nitrate', 'class:nitrate'), ('nitrates', 'class:nitrate'),
    ('ace inhibitor', 'class:ace_inhibitor'), ('ace inhibitors', 'class:ace_inhibitor');

INSERT INTO drug_interactions (id, kind, a, b, severity, description) VALUES
    (1, 'drug', 'warfarin', 'aspirin', 'major', 'increased risk of serious bleeding'),
    (2, 'drug', 'warfarin', 'class:nsaid', 'major', 'increased risk of serious (gastrointestinal) bleeding'),
    (3, 'drug', 'simvastatin', 'clarithromycin', 'major', 'CYP3A4 inhibition raises simvastatin levels: myopathy, rhabdomyolysis'),
    (4, 'drug', 'simvastatin', 'erythromycin', 'major', 'CYP3A4 inhibition raises simvastatin levels: myopathy, rhabdomyolysis'),
    (5, 'drug', 'class:pde5_inhibitor', 'class:nitrate', 'major', 'profound, possibly fatal hypotension'),
    (6, 'drug', 'class:ace_inhibitor', 'class:potassium_sparing_diuretic', 'moderate', 'hyperkalaemia; monitor potassium'),
    (7, 'drug', 'methotrexate', 'trimethoprim', 'major', 'additive antifolate effect: bone-marrow suppression'),
    (8, 'drug', 'methotrexate', 'class:nsaid', 'moderate', 'reduced methotrexate clearance: toxicity; monitor'),
    (9, 'drug', 'clopidogrel', 'omeprazole', 'moderate', 'CYP2C19 inhibition reduces the antiplatelet effect'),
    (10, 'drug', 'digoxin', 'amiodarone', 'major', 'raised digoxin levels: toxicity; halve the digoxin dose'),
    (11, 'drug', 'warfarin', 'amiodarone', 'major', 'raised INR: serious bleeding'),
    (12, 'drug', 'warfarin', 'sulfamethoxazole', 'major', 'raised INR: serious bleeding'),
    (13, 'drug', 'fluoxetine', 'tramadol', 'major', 'serotonin syndrome and seizures'),
    (14, 'allergy', 'class:penicillin', 'class:cephalosporin', 'moderate', 'cross-reactivity with penicillin allergy (about 1-2 %)'),
    (15, 'allergy', 'aspirin', 'class:nsaid', 'moderate', 'cross-sensitivity in aspirin allergy (aspirin-exacerbated respiratory disease)');
