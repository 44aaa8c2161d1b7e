//! The permission matrix — the ONE place that decides who may do what.
//!
//! Handlers call [`crate::auth::AuthUser::require`] with a [`Permission`] (role-level check) and,
//! for patient-scoped resources, [`crate::access`], which applies [`patient_access`] to the facts
//! about the caller's relation to the record (care team, own record). Nothing else in the crate
//! compares roles.
//!
//! | permission | admin | physician | nurse | receptionist | patient |
//! |---|---|---|---|---|---|
//! | `UsersManage` (POST/GET/PATCH /users) | ✓ | | | | |
//! | `AuditRead` (GET /audit-events, /verify) | ✓ | | | | |
//! | `PatientCreate` | ✓ | ✓ | ✓ | ✓ | |
//! | `PatientRead` / `PatientList` | demographics | care team (full) | care team (full) | demographics | own record (full) |
//! | `PatientUpdate` | demographics | care team (all fields) | care team (all fields) | demographics | |
//! | `PatientDelete` (soft) | ✓ | | | | |
//! | `CareTeamAssign` (assign and revoke) | ✓ | own care team | | ✓ | |
//! | `BreakGlass` (X-Break-Glass-Reason: single records only, [`patient_list_scope`]) | | ✓ | | | |
//! | `AppointmentBook` ([`may_book_appointment`]) | ✓ | own care team | own care team, only for themselves | ✓ | |
//! | `AppointmentUpdate` | ✓ | care team | care team | ✓ | |
//! | `AppointmentRead` | ✓ | ✓ | ✓ | ✓ | own |
//! | `PrescriptionCreate` / `PrescriptionDiscontinue` | | ✓ | | | |
//! | `PrescriptionRead` | | ✓ | ✓ | | own |
//!
//! Care team: a physician or nurse who registered the patient, was assigned
//! (`POST /patients/{id}/care-team`, until `DELETE /patients/{id}/care-team/{user}`) or is the
//! practitioner of an appointment with the patient that was neither cancelled nor a no-show and
//! ended less than `CADUCEUS_CARE_TEAM_ACCESS_DAYS` ago. Booking (or moving) an appointment for
//! another practitioner puts that practitioner in the care team, so it needs `CareTeamAssign`
//! ([`may_book_appointment`]).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Account roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Physician,
    Nurse,
    Receptionist,
    Patient,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Physician,
        Role::Nurse,
        Role::Receptionist,
        Role::Patient,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Physician => "physician",
            Role::Nurse => "nurse",
            Role::Receptionist => "receptionist",
            Role::Patient => "patient",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Clinicians can be in a care team.
    pub fn is_clinician(self) -> bool {
        matches!(self, Role::Physician | Role::Nurse)
    }
}

/// Declares [`Permission`] and, in [`perm`], one marker type for each of its variants.
macro_rules! permissions {
    ($($name:ident),* $(,)?) => {
        /// Role-level permissions.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Permission {
            $($name,)*
        }

        /// Type-level permissions for the [`crate::auth::Authorized`] extractor: a handler declares
        /// `auth: Authorized<perm::PatientCreate>` and the role check runs while the request head is
        /// extracted, i.e. before the body is read, parsed or validated (axum runs the body extractor
        /// last). So an unauthenticated caller gets 401, an unauthorised role 403 (audited), and only
        /// then can a body be refused with 400/415/422.
        pub mod perm {
            use super::Permission;

            /// A marker type standing for one [`Permission`].
            pub trait Required: Send + Sync + 'static {
                const PERMISSION: Permission;
            }

            $(
                #[doc = concat!("[`Permission::", stringify!($name), "`]")]
                #[derive(Debug, Clone, Copy)]
                pub struct $name;
                impl Required for $name {
                    const PERMISSION: Permission = Permission::$name;
                }
            )*
        }
    };
}

permissions!(
    UsersManage,
    AuditRead,
    PatientCreate,
    PatientList,
    PatientRead,
    PatientUpdate,
    PatientDelete,
    CareTeamAssign,
    BreakGlass,
    AppointmentBook,
    AppointmentRead,
    AppointmentUpdate,
    PrescriptionCreate,
    PrescriptionRead,
    PrescriptionDiscontinue,
);

/// The matrix in the module docs.
pub fn allows(role: Role, perm: Permission) -> bool {
    use Permission::*;
    use Role::*;
    match perm {
        UsersManage | AuditRead | PatientDelete => role == Admin,
        PatientCreate | AppointmentBook | AppointmentUpdate => {
            matches!(role, Admin | Physician | Nurse | Receptionist)
        }
        PatientList | PatientRead | AppointmentRead => true,
        PatientUpdate => matches!(role, Admin | Physician | Nurse | Receptionist),
        CareTeamAssign => matches!(role, Admin | Physician | Receptionist),
        BreakGlass | PrescriptionCreate | PrescriptionDiscontinue => role == Physician,
        PrescriptionRead => matches!(role, Physician | Nurse | Patient),
    }
}

/// Facts about the caller and one patient record.
#[derive(Debug, Clone, Copy, Default)]
pub struct Relation {
    /// The caller is a patient account linked to this record.
    pub own_record: bool,
    /// The caller is a clinician in the record's care team.
    pub in_care_team: bool,
    /// The request carries a non-empty `X-Break-Glass-Reason`.
    pub break_glass: bool,
}

impl Relation {
    /// Facts for a caller (`role`, linked record `own_patient`) and patient `patient`.
    pub fn of(
        role: Role,
        own_patient: Option<uuid::Uuid>,
        patient: uuid::Uuid,
        in_care_team: bool,
        break_glass: bool,
    ) -> Self {
        Self {
            own_record: role == Role::Patient && own_patient == Some(patient),
            in_care_team: role.is_clinician() && in_care_team,
            break_glass,
        }
    }
}

/// Decided without a database lookup: a patient account asking for another record gets `404`.
pub fn hidden_without_lookup(
    role: Role,
    own_patient: Option<uuid::Uuid>,
    patient: uuid::Uuid,
) -> bool {
    role == Role::Patient && own_patient != Some(patient)
}

/// Which patient records a list/search may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListScope {
    /// Every live record (admin, receptionist: demographics; physician with break-glass, only
    /// for a request narrowed to one patient record: full).
    All,
    /// Records whose care team includes the caller.
    CareTeam,
    /// Only the caller's linked record.
    OwnRecord,
}

/// List scope for a role (`break_glass`: the request carries `X-Break-Glass-Reason`;
/// `one_patient`: the request is narrowed to one patient record — an exact MRN, or the
/// `patient_id` of a record's appointments or prescriptions). Break-glass opens single records
/// only: on any other list or search the header changes nothing (the care team's scope).
pub fn patient_list_scope(role: Role, break_glass: bool, one_patient: bool) -> ListScope {
    match role {
        Role::Patient => ListScope::OwnRecord,
        Role::Physician if break_glass && one_patient && allows(role, Permission::BreakGlass) => {
            ListScope::All
        }
        Role::Physician | Role::Nurse => ListScope::CareTeam,
        Role::Admin | Role::Receptionist => ListScope::All,
    }
}

/// What the caller may see/do on one patient record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatientAccess {
    /// All fields, clinical included.
    Full,
    /// All fields through break-glass: allowed, audited as `patient.break_glass`.
    BreakGlass,
    /// Demographic fields only (no allergies, medications, conditions).
    Demographics,
    /// 403: the caller may know the record exists but may not open it.
    Denied,
    /// 404: existence must not leak (patient accounts, other records).
    Hidden,
}

/// May the caller assign clinicians to this patient's care team? Admins and receptionists may;
/// a physician only for a patient already in their care team (never via break-glass, so
/// self-assignment cannot bypass it).
pub fn may_assign_care_team(role: Role, rel: Relation) -> bool {
    allows(role, Permission::CareTeamAssign) && (!role.is_clinician() || rel.in_care_team)
}

/// May the caller book an appointment for this patient (or move one to another practitioner)?
/// Admins and receptionists schedule anyone; a physician or nurse only inside their own care
/// team: booking yourself would otherwise put you in the care team, bypassing it like
/// self-assignment would (pass the relation without break-glass). An appointment puts its
/// practitioner in the care team, so booking for someone else (`for_self` false) also needs
/// [`may_assign_care_team`]: a nurse books only for themselves.
pub fn may_book_appointment(role: Role, rel: Relation, for_self: bool) -> bool {
    allows(role, Permission::AppointmentBook)
        && (!role.is_clinician() || rel.in_care_team)
        && (for_self || may_assign_care_team(role, rel))
}

impl PatientAccess {
    pub fn clinical(self) -> bool {
        matches!(self, Self::Full | Self::BreakGlass)
    }
}

/// Record-level decision for one role and relation.
pub fn patient_access(role: Role, rel: Relation) -> PatientAccess {
    match role {
        Role::Patient if rel.own_record => PatientAccess::Full,
        Role::Patient => PatientAccess::Hidden,
        Role::Physician | Role::Nurse if rel.in_care_team => PatientAccess::Full,
        Role::Physician if rel.break_glass => PatientAccess::BreakGlass,
        Role::Physician | Role::Nurse => PatientAccess::Denied,
        Role::Admin | Role::Receptionist => PatientAccess::Demographics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_rules() {
        for r in [
            Role::Admin,
            Role::Physician,
            Role::Nurse,
            Role::Receptionist,
        ] {
            assert!(allows(r, Permission::PatientCreate));
            assert!(allows(r, Permission::AppointmentBook));
        }
        assert!(!allows(Role::Patient, Permission::PatientCreate));
        for r in Role::ALL {
            assert_eq!(
                allows(r, Permission::PrescriptionCreate),
                r == Role::Physician
            );
            assert_eq!(allows(r, Permission::UsersManage), r == Role::Admin);
            assert_eq!(allows(r, Permission::AuditRead), r == Role::Admin);
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
    }

    #[test]
    fn record_level() {
        let none = Relation::default();
        let team = Relation {
            in_care_team: true,
            ..none
        };
        let glass = Relation {
            break_glass: true,
            ..none
        };
        let own = Relation {
            own_record: true,
            ..none
        };
        assert_eq!(patient_access(Role::Physician, team), PatientAccess::Full);
        assert_eq!(patient_access(Role::Physician, none), PatientAccess::Denied);
        assert_eq!(
            patient_access(Role::Physician, glass),
            PatientAccess::BreakGlass
        );
        assert_eq!(patient_access(Role::Nurse, glass), PatientAccess::Denied);
        assert_eq!(patient_access(Role::Patient, own), PatientAccess::Full);
        assert_eq!(patient_access(Role::Patient, team), PatientAccess::Hidden);
        assert_eq!(
            patient_access(Role::Receptionist, none),
            PatientAccess::Demographics
        );
    }

    #[test]
    fn break_glass_widens_only_a_list_narrowed_to_one_patient() {
        use ListScope::*;
        assert_eq!(patient_list_scope(Role::Physician, true, false), CareTeam);
        assert_eq!(patient_list_scope(Role::Physician, true, true), All);
        assert_eq!(patient_list_scope(Role::Physician, false, true), CareTeam);
        assert_eq!(patient_list_scope(Role::Nurse, true, true), CareTeam);
        assert_eq!(patient_list_scope(Role::Receptionist, false, false), All);
        assert_eq!(patient_list_scope(Role::Patient, true, true), OwnRecord);
    }

    #[test]
    fn booking_for_another_practitioner_needs_the_assign_permission() {
        let team = Relation {
            in_care_team: true,
            ..Relation::default()
        };
        let none = Relation::default();
        // a nurse in the care team books for themselves only
        assert!(may_book_appointment(Role::Nurse, team, true));
        assert!(!may_book_appointment(Role::Nurse, team, false));
        // a physician in the care team may assign, so may book for others
        assert!(may_book_appointment(Role::Physician, team, false));
        assert!(!may_book_appointment(Role::Physician, none, true));
        for r in [Role::Admin, Role::Receptionist] {
            assert!(may_book_appointment(r, none, false));
        }
        assert!(!may_book_appointment(Role::Patient, none, true));
    }
}
