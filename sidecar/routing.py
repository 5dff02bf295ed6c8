"""Where a job goes, and why: a pure function of the schedule, the config and the company.

The reason is stored on the job so an admin can see why 50 learners went out locally
and 5,000 through the cloud.
"""

from dataclasses import dataclass

CLOUD_PROVIDERS = ("aws", "cloudflare")


@dataclass(frozen=True)
class CompanyOverride:
    """A company's own offload setting (config `[[companies]]` or Moodle's cloud settings)."""

    id: int
    enabled: bool = True
    provider: str | None = None  # aws | cloudflare | local
    threshold: int | None = None


@dataclass(frozen=True)
class Route:
    route: str  # local | aws | cloudflare
    reason: str
    certificates: str  # where certificates are rendered: local | cloud

    @property
    def is_cloud(self) -> bool:
        return self.route in CLOUD_PROVIDERS


def choose_route(
    *,
    preference: str,  # auto | cloud | local (the schedule's cloud_preference)
    recipients: int,
    offload_enabled: bool,
    provider: str,
    threshold: int,
    certificate_mode: str,  # cloud | local | cloud_if_enabled
    company: CompanyOverride | None = None,
) -> Route:
    """The route for a job of `recipients` learners."""
    whose = ""  # whose provider it is, for the reason
    if company is not None:
        if not company.enabled:
            return _local(f"company {company.id} has cloud offload disabled", certificate_mode)
        if company.provider:
            provider, whose = company.provider, f"company {company.id}'s "
        if company.threshold is not None:
            threshold = company.threshold
    if preference == "local":
        return _local("the schedule forces local delivery", certificate_mode)
    if not offload_enabled:
        why = "offload.enabled is false"
        if preference == "cloud":
            why += " (the schedule asks for the cloud)"
        return _local(why, certificate_mode)
    if provider not in CLOUD_PROVIDERS:
        return _local(f"{whose or 'the '}offload provider is {provider!r}", certificate_mode)
    who = (
        f"company {company.id}'s " if company is not None and company.threshold is not None else ""
    )
    if preference == "cloud":
        reason = f"the schedule forces the cloud ({provider})"
    elif recipients >= threshold:
        reason = f"{recipients} recipients >= {who}threshold {threshold}"
    else:
        return _local(f"{recipients} recipients < {who}threshold {threshold}", certificate_mode)
    certs = "local" if certificate_mode == "local" else "cloud"
    return Route(provider, reason, certs)


def _local(reason: str, certificate_mode: str) -> Route:
    # Certificates of a local job are rendered here whatever the mode: there is no cloud
    # worker in the path (certificate_mode = cloud only applies to cloud jobs).
    return Route("local", reason, "local")


def fall_back(route: Route, problem: str, fallback: str) -> Route | None:
    """The route after the cloud could not be reached: local, or None for `fail`."""
    if fallback == "queue_local":
        return Route(
            "local", f"{route.reason}; {problem}: queued locally (offload.fallback)", "local"
        )
    return None
