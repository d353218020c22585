"""Resources: where the lake and the landing zone are. Values come from the environment
(LAKE_ROOT, LANDING_ROOT) when the code location loads."""


from pathlib import Path

from dagster import ConfigurableResource

from ids_lakehouse import config


class LakeResource(ConfigurableResource):
    lake_root: str
    landing_root: str

    @classmethod
    def from_env(cls) -> "LakeResource":
        return cls(lake_root=str(config.lake_root()), landing_root=str(config.landing_root()))

    def lake(self) -> config.Lake:
        return config.Lake(Path(self.lake_root))

    @property
    def landing(self) -> Path:
        return Path(self.landing_root)
