"""Data sharing agreements / data use licences: one YAML file each in
`data_model/agreements/`. An invalid agreement fails at load, naming the file and key.
What a release may contain is checked again, at release time, by the gate."""

from __future__ import annotations

import datetime as dt
import hashlib
from functools import lru_cache
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ids_lakehouse.declarations import DeclarationError, load
from ids_lakehouse.deid.policy import load_policy
from ids_lakehouse.marts.declaration import Purpose, load_marts


class Recipient(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    organisation: str
    contact: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")


class QueryTerms(BaseModel):
    """Remote statistical queries (`POST /v1/queries`): the fields the recipient may group
    and filter by, and the privacy-loss budget all its queries spend together."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    budget_rho: float = Field(gt=0)         # zero-concentrated DP, all tokens together
    fields: list[str] = Field(min_length=1)
    measures: list[str] = []                # numeric measures (disclosure.yaml) it may use


class Agreement(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    title: str
    data_owners: list[str] = Field(min_length=1)
    recipient: Recipient
    purpose: Purpose
    legal_basis: str
    approver: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    approved_on: dt.date
    effective: dt.date
    expires: dt.date
    min_cell_size: int = Field(ge=2)
    k_anonymity: int = Field(ge=2)
    permitted: dict[str, list[str]] = Field(min_length=1)   # mart -> fields
    release: dict[str, list[str]] = Field(min_length=1)     # what a release extracts
    # Minimum necessary: the sources a release may draw on. Every released row derives from
    # these alone, and each one's data owner must be a party (in data_owners).
    sources: list[str] = Field(min_length=1)
    # Operations: whose records are released (people seen in these sources); required.
    population_sources: list[str] = []
    queries: QueryTerms | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Agreement:
        if self.expires < self.effective:
            raise ValueError("expires is before effective")
        if self.approved_on > self.effective:
            raise ValueError("approved_on is after effective")
        allowed = load_marts().of_purpose(self.purpose)
        wrong = sorted(set(self.permitted) - set(allowed))
        if wrong:
            raise ValueError(f"permitted marts {wrong} do not serve the purpose "
                             f"{self.purpose!r} (allowed: {allowed})")
        self._check_sources()
        policy = load_policy()
        self._check_queries()
        if self.min_cell_size < policy.min_cell_size:
            raise ValueError(f"min_cell_size {self.min_cell_size} is below the policy floor "
                             f"{policy.min_cell_size}")
        if self.k_anonymity < policy.k_anonymity:
            raise ValueError(f"k_anonymity {self.k_anonymity} is below the policy floor "
                             f"{policy.k_anonymity}")
        return self

    def _check_queries(self) -> None:
        from ids_lakehouse.marts.indicators import DIMENSIONS

        if self.queries is None:
            return
        if self.purpose == "operations":
            raise ValueError("queries: an operations agreement cannot make statistical "
                             "queries")
        policy = load_policy().remote_queries
        unknown = sorted(set(self.queries.fields) - set(DIMENSIONS))
        if unknown:
            raise ValueError(f"queries.fields {unknown} are not query fields ({DIMENSIONS})")
        unknown = sorted(set(self.queries.measures) - set(policy.measures))
        if unknown:
            raise ValueError(f"queries.measures {unknown} are not declared in "
                             "data_model/disclosure.yaml remote_queries.measures")
        if self.queries.budget_rho > policy.max_budget_rho:
            raise ValueError(f"queries.budget_rho {self.queries.budget_rho} is above the "
                             f"policy's maximum {policy.max_budget_rho}")

    def _check_sources(self) -> None:
        from ids_lakehouse.sources import load_sources

        declared = load_sources()
        unknown = sorted((set(self.sources) | set(self.population_sources)) - set(declared))
        if unknown:
            raise ValueError(f"sources {unknown} are not declared in data_model/sources/")
        for source in self.sources:
            owner = declared[source].data_owner
            if owner not in self.data_owners:
                raise ValueError(f"source {source!r}: its data owner {owner} is not a party "
                                 "to the agreement (data_owners); add the owner or drop the "
                                 "source")
        if self.purpose == "operations" and not self.population_sources:
            raise ValueError("an operations agreement must name its population: "
                             "population_sources (the sources whose people it concerns)")
        outside = sorted(set(self.population_sources) - set(self.sources))
        if outside:
            raise ValueError(f"population_sources {outside} are not among the agreement's "
                             "sources")


class AgreementError(DeclarationError):
    pass


def load_agreement(path: Path) -> Agreement:
    return load(path, Agreement, name_key="id", error=AgreementError)


def agreements_dir() -> Path:
    return Path(str(resources.files("data_model").joinpath("agreements")))


def load_agreements(directory: Path | None = None) -> dict[str, Agreement]:
    """Every agreement, as the files stand now (a file edited, added or removed is seen by
    the next call, even in a long-running process); one that fails validation is refused
    for all (nothing loads) and the refusal is written to the audit log, like a refusal at
    release."""
    directory = Path(directory) if directory else agreements_dir()
    state = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size)
                  for p in sorted(directory.glob("*.yaml")))
    # A refused set of files is refused again without reading or auditing it again (a
    # service asks on every request: each asked for an audit commit until it was fixed).
    refused = _REFUSED.get((directory, state))
    if refused is not None:
        raise AgreementError(str(refused))
    try:
        return _load_agreements(directory, state)
    except AgreementError as exc:
        if len(_REFUSED) >= 64:
            _REFUSED.clear()
        _REFUSED[(directory, state)] = exc
        raise


_REFUSED: dict[tuple[Path, tuple[tuple[str, int, int], ...]], AgreementError] = {}


@lru_cache(maxsize=8)
def _load_agreements(directory: Path, state: tuple[tuple[str, int, int], ...]
                     ) -> dict[str, Agreement]:
    out = {}
    for path in sorted(directory.glob("*.yaml")):
        try:
            agreement = load_agreement(path)
        except AgreementError as exc:
            unaudited = _audit_refusal(directory, path, str(exc))
            if unaudited:   # the refusal still stands; say why it is not in the log
                raise AgreementError(f"{exc} (not audited: {unaudited})") from None
            raise
        out[agreement.id] = agreement
    return out


def _audit_refusal(directory: Path, path: Path, reason: str) -> str | None:
    """Write the refusal to the audit log; returns why it could not be, if it could not
    (no secret to sign with, or a wrong one)."""
    from ids_lakehouse import audit, config

    try:
        audit.record(config.lake(), "agreement_refused", f"{path.name} refused at load",
                     via=f"load of the agreements in {directory}",
                     details={"file": path.name, "sha256": hashlib.sha256(path.read_bytes())
                              .hexdigest(), "reason": reason})
    except (config.MissingSecretError, audit.AuditKeyError) as exc:
        return str(exc)
    return None


def fingerprint(agreement: Agreement) -> str:
    """SHA-256 of the declaration a release was made under (its canonical JSON): what the
    gate actually applied, wherever it was loaded from."""
    return hashlib.sha256(agreement.model_dump_json().encode()).hexdigest()
