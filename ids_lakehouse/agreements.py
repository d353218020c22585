"""Data sharing agreements / data use licences: one YAML file each in
`data_model/agreements/`. An invalid agreement fails at load, naming the file and key.
What a release may contain is checked again, at release time, by the gate."""

from __future__ import annotations

import datetime as dt
import hashlib
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ids_lakehouse.declarations import DeclarationError, load
from ids_lakehouse.deid.policy import load_policy

Purpose = Literal["indicators", "research", "operations"]
PURPOSE_MARTS: dict[str, frozenset[str]] = {
    "indicators": frozenset({"indicators", "program_overlap"}),
    "research": frozenset({"research_person", "research_participation"}),
    "operations": frozenset({"contact_directory"}),
}


class Recipient(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    organisation: str
    contact: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")


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
    population_sources: list[str] = []                      # operations: people seen here

    @model_validator(mode="after")
    def _consistent(self) -> Agreement:
        if self.expires < self.effective:
            raise ValueError("expires is before effective")
        if self.approved_on > self.effective:
            raise ValueError("approved_on is after effective")
        wrong = sorted(set(self.permitted) - PURPOSE_MARTS[self.purpose])
        if wrong:
            raise ValueError(f"permitted marts {wrong} do not serve the purpose "
                             f"{self.purpose!r} (allowed: {sorted(PURPOSE_MARTS[self.purpose])})")
        policy = load_policy()
        if self.min_cell_size < policy.min_cell_size:
            raise ValueError(f"min_cell_size {self.min_cell_size} is below the policy floor "
                             f"{policy.min_cell_size}")
        if self.k_anonymity < policy.k_anonymity:
            raise ValueError(f"k_anonymity {self.k_anonymity} is below the policy floor "
                             f"{policy.k_anonymity}")
        return self

    def in_force(self, today: dt.date) -> bool:
        return self.effective <= today <= self.expires


class AgreementError(DeclarationError):
    pass


def load_agreement(path: Path) -> Agreement:
    return load(path, Agreement, name_key="id", error=AgreementError)


def agreements_dir() -> Path:
    return Path(str(resources.files("data_model").joinpath("agreements")))


@lru_cache(maxsize=4)
def load_agreements(directory: Path | None = None) -> dict[str, Agreement]:
    directory = Path(directory) if directory else agreements_dir()
    return {a.id: a for a in (load_agreement(p) for p in sorted(directory.glob("*.yaml")))}


def fingerprint(agreement_id: str, directory: Path | None = None) -> str:
    """SHA-256 of the agreement file as it stood when a release was made."""
    path = (Path(directory) if directory else agreements_dir()) / f"{agreement_id}.yaml"
    return hashlib.sha256(path.read_bytes()).hexdigest()
