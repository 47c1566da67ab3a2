"""Fleet operations (SPEC "Fleet operations"): the health a gateway publishes upstream
(:mod:`gateway.fleet.health`), remote configuration (:mod:`gateway.fleet.remote`) and the
audit's fleet view (:mod:`gateway.audit.fleet_view`)."""
