"""Checking incoming resources against FHIR structure and required elements, on the REST path.

The structure (element names, types, cardinality, required elements, primitive formats) comes from the
`fhir.resources` models of FHIR R4B (4.3), whose resources clinhub serves as R4 (4.0.1): for the resources
clinhub indexes the two releases have the same elements. A few required value-set bindings the models do
not check (Patient.gender, the status elements) are checked here. Each model validation costs about a
millisecond, so bulk paths (NDJSON import, pulls) only check resourceType and id.
"""

from __future__ import annotations

import importlib.util
import re
from functools import cache
from pathlib import Path
from typing import Any

from clinhub.errors import InvalidResource

_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")

#: required bindings the models leave unchecked: (type, element) -> allowed codes
REQUIRED_CODES: dict[tuple[str, str], frozenset[str]] = {
    ("Patient", "gender"): frozenset({"male", "female", "other", "unknown"}),
    ("Practitioner", "gender"): frozenset({"male", "female", "other", "unknown"}),
    ("Observation", "status"): frozenset(
        {
            "registered",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "cancelled",
            "entered-in-error",
            "unknown",
        }
    ),
    ("Encounter", "status"): frozenset(
        {
            "planned",
            "arrived",
            "triaged",
            "in-progress",
            "onleave",
            "finished",
            "cancelled",
            "entered-in-error",
            "unknown",
        }
    ),
    ("MedicationRequest", "status"): frozenset(
        {"active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped", "draft", "unknown"}
    ),
    ("MedicationRequest", "intent"): frozenset(
        {
            "proposal",
            "plan",
            "order",
            "original-order",
            "reflex-order",
            "filler-order",
            "instance-order",
            "option",
        }
    ),
}


#: the resource types of FHIR R4 (4.0.1)
R4_RESOURCE_TYPES = frozenset(
    """
    Account ActivityDefinition AdverseEvent AllergyIntolerance Appointment AppointmentResponse AuditEvent
    Basic Binary BiologicallyDerivedProduct BodyStructure Bundle CapabilityStatement CarePlan CareTeam
    CatalogEntry ChargeItem ChargeItemDefinition Claim ClaimResponse ClinicalImpression CodeSystem
    Communication CommunicationRequest CompartmentDefinition Composition ConceptMap Condition Consent
    Contract Coverage CoverageEligibilityRequest CoverageEligibilityResponse DetectedIssue Device
    DeviceDefinition DeviceMetric DeviceRequest DeviceUseStatement DiagnosticReport DocumentManifest
    DocumentReference EffectEvidenceSynthesis Encounter Endpoint EnrollmentRequest EnrollmentResponse
    EpisodeOfCare EventDefinition Evidence EvidenceVariable ExampleScenario ExplanationOfBenefit
    FamilyMemberHistory Flag Goal GraphDefinition Group GuidanceResponse HealthcareService ImagingStudy
    Immunization ImmunizationEvaluation ImmunizationRecommendation ImplementationGuide InsurancePlan
    Invoice Library Linkage List Location Measure MeasureReport Media Medication MedicationAdministration
    MedicationDispense MedicationKnowledge MedicationRequest MedicationStatement MedicinalProduct
    MedicinalProductAuthorization MedicinalProductContraindication MedicinalProductIndication
    MedicinalProductIngredient MedicinalProductInteraction MedicinalProductManufactured
    MedicinalProductPackaged MedicinalProductPharmaceutical MedicinalProductUndesirableEffect
    MessageDefinition MessageHeader MolecularSequence NamingSystem NutritionOrder Observation
    ObservationDefinition OperationDefinition OperationOutcome Organization OrganizationAffiliation
    Parameters Patient PaymentNotice PaymentReconciliation Person PlanDefinition Practitioner
    PractitionerRole Procedure Provenance Questionnaire QuestionnaireResponse RelatedPerson RequestGroup
    ResearchDefinition ResearchElementDefinition ResearchStudy ResearchSubject RiskAssessment
    RiskEvidenceSynthesis Schedule SearchParameter ServiceRequest Slot Specimen SpecimenDefinition
    StructureDefinition StructureMap Subscription Substance SubstanceNucleicAcid SubstancePolymer
    SubstanceProtein SubstanceReferenceInformation SubstanceSourceMaterial SubstanceSpecification
    SupplyDelivery SupplyRequest Task TerminologyCapabilities TestReport TestScript ValueSet
    VerificationResult VisionPrescription
    """.split()  # noqa: SIM905 (a word list reads better than 146 quoted names)
)


@cache
def resource_types() -> tuple[str, ...]:
    """The R4 resource types served: those the R4B models also define, so they can be checked (a few
    R4-only types that R4B dropped or reshaped, such as MedicinalProduct, are not served)."""
    spec = importlib.util.find_spec("fhir")  # a namespace package: finding it imports nothing
    folders = [Path(p) / "resources" / "R4B" for p in (spec.submodule_search_locations or [])] if spec else []
    return tuple(
        sorted(
            name for name in R4_RESOURCE_TYPES if any((f / f"{name.lower()}.py").is_file() for f in folders)
        )
    )


@cache
def _served() -> frozenset[str]:
    return frozenset(resource_types())


def is_resource_type(name: str) -> bool:
    return name in _served()


@cache
def model_of(resource_type: str) -> type | None:
    """The model class of a served resource type, or None."""
    if not is_resource_type(resource_type):
        return None
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(resource_type)


def _path(resource_type: str, location: tuple) -> str:
    path = resource_type
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "__root__":
            path += f".{part}"
    return path


def issue(expression: str, diagnostics: str, code: str = "structure") -> dict:
    return {"severity": "error", "code": code, "diagnostics": diagnostics, "expression": [expression]}


def validate(resource: Any, resource_type: str | None = None) -> None:
    """Raise InvalidResource (422, with an OperationOutcome issue per problem in `detail["issues"]`)
    unless `resource` is a structurally valid FHIR resource of `resource_type` (when given)."""
    from pydantic import ValidationError

    if not isinstance(resource, dict):
        raise InvalidResource("the body must be a FHIR resource (a JSON object)")
    found_type = resource.get("resourceType")
    if not isinstance(found_type, str) or model_of(found_type) is None:
        raise InvalidResource(f"resourceType {found_type!r} is not a FHIR R4 resource type")
    if resource_type is not None and found_type != resource_type:
        raise InvalidResource(f"the body is a {found_type}, not a {resource_type}")
    if "id" in resource and (not isinstance(resource["id"], str) or not _ID.fullmatch(resource["id"])):
        raise InvalidResource(
            f"{found_type}.id must be 1 to 64 letters, digits, '-' or '.'",
            detail={"issues": [issue(f"{found_type}.id", "not a valid id", "value")]},
        )
    issues: list[dict] = []
    try:
        model_of(found_type).model_validate(resource)  # type: ignore[union-attr]
    except ValidationError as exc:
        for error in exc.errors()[:20]:
            message = error.get("msg", "invalid").replace("Value error, ", "")
            issues.append(issue(_path(found_type, tuple(error.get("loc", ()))), message))
    for (bound_type, element), codes in REQUIRED_CODES.items():
        value = resource.get(element)
        if bound_type == found_type and value is not None and value not in codes:
            issues.append(
                issue(
                    f"{found_type}.{element}",
                    f"{value!r} is not one of {', '.join(sorted(codes))}",
                    "code-invalid",
                )
            )
    if issues:
        first = issues[0]
        raise InvalidResource(
            f"{first['expression'][0]}: {first['diagnostics']}"
            + (f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""),
            detail={"issues": issues},
        )
