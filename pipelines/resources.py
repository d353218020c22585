"""Resources: where the lake and the landing zone are. Values come from the environment
(LAKE_ROOT, LANDING_ROOT) when the code location loads.

Every step that uses the lake runs with a private umask and the zone roots in place
(ids_lakehouse/zones.py); when the step ends, everything under the lake gets its zone's
modes, so a file is never left more readable than its zone allows."""


from pathlib import Path

from dagster import ConfigurableResource, InitResourceContext

from ids_lakehouse import config, zones
from ids_lakehouse.storage import lake_path


class LakeResource(ConfigurableResource):
    lake_root: str
    landing_root: str

    @classmethod
    def from_env(cls) -> "LakeResource":
        return cls(lake_root=str(config.lake_root()), landing_root=str(config.landing_root()))

    def setup_for_execution(self, context: InitResourceContext) -> None:
        zones.prepare(lake_path(self.lake_root))
        if context.run is not None:   # a step of a run: nothing written yet
            from ids_lakehouse import audit

            audit.check_key(self.layout())

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        # After a step of a run. A sensor tick writes only audit events, which the umask
        # already makes 0600 in the restricted zone: no walk of the lake every tick.
        if context.run is not None:
            done = zones.enforce(lake_path(self.lake_root))
            zones.enforce_landing(Path(self.landing_root))
            for warning in done.warnings():
                if context.log is not None:
                    context.log.warning(warning)

    def layout(self) -> config.Lake:
        """The lake's layout: where each zone, layer and table lives under lake_root."""
        return config.Lake(lake_path(self.lake_root))

    @property
    def landing(self) -> Path:
        return Path(self.landing_root)
