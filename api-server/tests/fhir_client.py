"""A real third-party FHIR client against the running API: fhirpy (PyPI, installed into
.tools/fhir-venv by scripts/tools.sh) creates, reads, updates, searches and pages through
patients, appointments and medication requests (which the server's CapabilityStatement must
list with create, read and search), with a bearer token.

    fhir_client.py BASE_URL TOKEN MRN_SYSTEM PRACTITIONER_ID TAG

Run by api-server/tests/fhir_client.rs; exits non-zero with the failing step (and the server's
OperationOutcome) on any failure. Prints the steps it ran.
"""

import datetime
import sys

from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound

BASE, TOKEN, MRN_SYSTEM, PRACTITIONER, TAG = sys.argv[1:6]
PAGE = 2
PATIENTS = 5

client = SyncFHIRClient(BASE, authorization=f"Bearer {TOKEN}")
steps = []


def step(name):
    steps.append(name)
    print(f"fhirpy: {name}", flush=True)


def expect(cond, what):
    if not cond:
        sys.exit(f"fhirpy: FAILED after {steps[-1] if steps else 'start'}: {what}")


metadata = client.execute("metadata", method="get")
served = {r["type"]: r for r in metadata["rest"][0]["resource"]}
step(f"metadata lists {sorted(served)}")


def interactions(kind):
    return {i["code"] for i in served.get(kind, {}).get("interaction", [])}


# --- Patient: create, read, update, search, page ----------------------------------------------
created = []
for i in range(PATIENTS):
    p = client.resource(
        "Patient",
        identifier=[{"system": MRN_SYSTEM, "value": f"PY-{TAG}-{i}"}],
        name=[{"use": "official", "family": f"Pyclient{TAG}", "given": [f"Given{i}"]}],
        gender="female" if i % 2 == 0 else "male",
        birthDate="1984-02-0" + str(i + 1),
    )
    p.save()
    expect(p.id, "the created Patient has an id")
    expect(p["meta"]["versionId"], "the created Patient has meta.versionId")
    created.append(p)
step(f"created {len(created)} patients")

first = client.reference("Patient", created[0].id).to_resource()
expect(first["name"][0]["family"] == f"Pyclient{TAG}", "read returns the family name")
expect(first["identifier"][0]["value"] == f"PY-{TAG}-0", "read returns the MRN")
step("read a patient by reference")

first["telecom"] = [{"system": "phone", "value": "+1 555 0142"}]
first.save()
again = client.resources("Patient").search(_id=first.id).get()
expect(again["telecom"][0]["value"] == "+1 555 0142", "the update is read back")
step("updated a patient (PUT) and read it back")

by_mrn = client.resources("Patient").search(identifier=f"{MRN_SYSTEM}|PY-{TAG}-3").fetch()
expect([p.id for p in by_mrn] == [created[3].id], f"identifier search finds one: {by_mrn}")
by_name = client.resources("Patient").search(family=f"Pyclient{TAG}", birthdate="1984-02-03").fetch()
expect([p.id for p in by_name] == [created[2].id], f"family+birthdate search finds one: {by_name}")
step("searched by identifier and by family+birthdate")

page = client.resources("Patient").limit(PAGE).fetch()
expect(len(page) == PAGE, f"one page holds _count={PAGE}: {len(page)}")
everyone = client.resources("Patient").limit(PAGE).fetch_all()
ids = [p.id for p in everyone]
expect(len(ids) == len(set(ids)), "paging returns no patient twice")
expect({p.id for p in created} <= set(ids), "paging through every page finds every patient")
total = client.execute("Patient", method="get", params={"_summary": "count"})["total"]
expect(total == len(ids), f"_summary=count ({total}) agrees with the pages ({len(ids)})")
step(f"paged through {len(ids)} patients {PAGE} at a time (next links)")

try:
    client.reference("Patient", "00000000-0000-0000-0000-000000000000").to_resource()
    expect(False, "an unknown id is not found")
except ResourceNotFound:
    step("an unknown patient is ResourceNotFound")

# --- Appointment and MedicationRequest ---------------------------------------------------------
for kind in ("Appointment", "MedicationRequest"):
    expect({"create", "read", "search-type"} <= interactions(kind), f"{kind} create, read and search are served")
patient_ref = {"reference": f"Patient/{created[0].id}"}
day = datetime.datetime.now(datetime.timezone.utc).replace(
    hour=0, minute=0, second=0, microsecond=0
) + datetime.timedelta(days=3)
for h in range(3):
    start = day + datetime.timedelta(hours=9 + h)
    a = client.resource(
        "Appointment",
        status="booked",
        start=start.isoformat().replace("+00:00", "Z"),
        end=(start + datetime.timedelta(minutes=30)).isoformat().replace("+00:00", "Z"),
        reasonCode=[{"text": "Follow-up"}],
        participant=[
            {"actor": patient_ref, "status": "accepted"},
            {"actor": {"reference": f"Practitioner/{PRACTITIONER}"}, "status": "accepted"},
        ],
    )
    try:
        a.save()
    except OperationOutcome as e:
        expect(False, f"creating an Appointment: {e}")
    expect(a.id, "the created Appointment has an id")
step("created 3 appointments")
found = client.resources("Appointment").search(patient=f"Patient/{created[0].id}").limit(PAGE).fetch_all()
for a in found:
    client.reference("Appointment", a.id).to_resource()
expect(len(found) >= 3, f"appointments found: {len(found)}")
step(f"searched, paged and read {len(found)} appointments")

for name in ("Amoxicillin", "Paracetamol"):
    m = client.resource(
        "MedicationRequest",
        status="active",
        intent="order",
        medicationCodeableConcept={"text": f"{name} 500 mg"},
        subject=patient_ref,
        dosageInstruction=[{
            "text": "500 mg oral twice daily",
            "route": {"coding": [{"system": "http://snomed.info/sct", "code": "26643006"}], "text": "oral"},
            "timing": {"code": {"text": "twice daily"}},
            "doseAndRate": [{"doseQuantity": {"value": 500, "unit": "mg"}}],
        }],
        dispenseRequest={"expectedSupplyDuration": {
            "value": 30, "unit": "days", "system": "http://unitsofmeasure.org", "code": "d"}},
    )
    try:
        m.save()
    except OperationOutcome as e:
        expect(False, f"creating a MedicationRequest: {e}")
    expect(m.id, "the created MedicationRequest has an id")
step("created 2 medication requests")
found = client.resources("MedicationRequest").search(patient=f"Patient/{created[0].id}").limit(1).fetch_all()
for m in found:
    client.reference("MedicationRequest", m.id).to_resource()
expect(len(found) >= 2, f"medication requests found: {len(found)}")
step(f"searched, paged and read {len(found)} medication requests")

print(f"fhirpy: {len(steps)} steps passed", flush=True)
