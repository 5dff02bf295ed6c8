"""Route choice: schedule preference x offload.enabled x provider x threshold x company x
certificate_mode, and the fallback when the cloud cannot be reached. The reason is what an
admin reads on the job, so each case checks the words that say why."""

import pytest

from sidecar.routing import CompanyOverride, Route, choose_route, fall_back

# The config every case starts from: offload on, AWS, threshold 1000, certificates in the
# cloud when the job goes there.
BASE = dict(
    preference="auto",
    recipients=1000,
    offload_enabled=True,
    provider="aws",
    threshold=1000,
    certificate_mode="cloud_if_enabled",
    company=None,
)

C12 = 12  # an IOMAD company with its own settings


def case(id, expected_route, reason_words, certificates=None, **over):
    """One table row: `over` changes BASE; every word in `reason_words` is in the reason."""
    if certificates is None:
        certificates = "local" if expected_route == "local" else "cloud"
    return pytest.param(over, expected_route, reason_words, certificates, id=id)


CASES = [
    # --- auto: the threshold decides ---------------------------------------------------
    case("auto-aws-below-threshold", "local", ["999 recipients", "< threshold 1000"],
         recipients=999),
    case("auto-aws-at-threshold", "aws", ["1000 recipients", ">= threshold 1000"]),
    case("auto-aws-above-threshold", "aws", ["5000 recipients", ">= threshold 1000"],
         recipients=5000),
    case("auto-cloudflare-below-threshold", "local", ["< threshold 1000"],
         provider="cloudflare", recipients=10),
    case("auto-cloudflare-at-threshold", "cloudflare", [">= threshold 1000"],
         provider="cloudflare"),
    case("auto-cloudflare-above-threshold", "cloudflare", [">= threshold 1000"],
         provider="cloudflare", recipients=50_000),
    case("auto-threshold-0-sends-one-learner-to-the-cloud", "aws", [">= threshold 0"],
         threshold=0, recipients=1),
    case("auto-local-provider-above-threshold", "local", ["provider is 'local'"],
         provider="local", recipients=5000),
    case("auto-local-provider-below-threshold", "local", ["provider is 'local'"],
         provider="local", recipients=5),
    case("auto-offload-disabled-above-threshold", "local", ["offload.enabled is false"],
         offload_enabled=False, recipients=5000),
    case("auto-offload-disabled-below-threshold", "local", ["offload.enabled is false"],
         offload_enabled=False, recipients=5),
    case("auto-offload-disabled-local-provider", "local", ["offload.enabled is false"],
         offload_enabled=False, provider="local"),
    # --- cloud: forced, whatever the size, unless offload is off or has no cloud -------
    case("cloud-aws-below-threshold", "aws", ["forces the cloud", "aws"],
         preference="cloud", recipients=3),
    case("cloud-aws-above-threshold", "aws", ["forces the cloud", "aws"],
         preference="cloud", recipients=5000),
    case("cloud-cloudflare-below-threshold", "cloudflare", ["forces the cloud", "cloudflare"],
         preference="cloud", provider="cloudflare", recipients=3),
    case("cloud-local-provider", "local", ["provider is 'local'"],
         preference="cloud", provider="local"),
    case("cloud-offload-disabled", "local",
         ["offload.enabled is false", "the schedule asks for the cloud"],
         preference="cloud", offload_enabled=False),
    # --- local: forced, whatever the size ---------------------------------------------
    case("local-aws-above-threshold", "local", ["forces local"],
         preference="local", recipients=50_000),
    case("local-cloudflare-at-threshold", "local", ["forces local"],
         preference="local", provider="cloudflare"),
    case("local-offload-disabled", "local", ["forces local"],
         preference="local", offload_enabled=False),
    # --- company override ----------------------------------------------------------------
    case("company-disabled-above-threshold", "local",
         ["company 12", "cloud offload disabled"],
         company=CompanyOverride(C12, enabled=False), recipients=5000),
    case("company-disabled-beats-a-schedule-forcing-the-cloud", "local",
         ["company 12", "cloud offload disabled"],
         company=CompanyOverride(C12, enabled=False), preference="cloud"),
    case("company-enabled-without-overrides-follows-the-config", "aws",
         [">= threshold 1000"], company=CompanyOverride(C12)),
    case("company-own-provider-cloudflare-above-threshold", "cloudflare",
         [">= threshold 1000"], company=CompanyOverride(C12, provider="cloudflare")),
    case("company-own-provider-aws-over-config-cloudflare", "aws", ["forces the cloud", "aws"],
         company=CompanyOverride(C12, provider="aws"), provider="cloudflare",
         preference="cloud"),
    case("company-own-provider-local-above-threshold", "local",
         ["company 12", "provider is 'local'"],
         company=CompanyOverride(C12, provider="local"), recipients=5000),
    case("company-own-provider-local-schedule-forcing-the-cloud", "local",
         ["company 12", "provider is 'local'"],
         company=CompanyOverride(C12, provider="local"), preference="cloud"),
    case("company-own-threshold-lower-sends-to-the-cloud", "aws",
         ["60 recipients", ">= company 12's threshold 50"],
         company=CompanyOverride(C12, threshold=50), recipients=60),
    case("company-own-threshold-at", "aws", [">= company 12's threshold 50"],
         company=CompanyOverride(C12, threshold=50), recipients=50),
    case("company-own-threshold-lower-still-below", "local",
         ["40 recipients", "< company 12's threshold 50"],
         company=CompanyOverride(C12, threshold=50), recipients=40),
    case("company-own-threshold-higher-keeps-a-big-job-local", "local",
         ["1000 recipients", "< company 12's threshold 5000"],
         company=CompanyOverride(C12, threshold=5000)),
    case("company-own-threshold-0", "aws", [">= company 12's threshold 0"],
         company=CompanyOverride(C12, threshold=0), recipients=1),
    case("company-own-threshold-ignored-when-the-schedule-forces-local", "local",
         ["forces local"], company=CompanyOverride(C12, threshold=0), preference="local"),
    case("company-own-provider-and-threshold", "cloudflare",
         [">= company 12's threshold 10"],
         company=CompanyOverride(C12, provider="cloudflare", threshold=10), recipients=10),
    case("company-enabled-cannot-turn-on-disabled-offload", "local",
         ["offload.enabled is false"],
         company=CompanyOverride(C12, enabled=True, provider="aws", threshold=0),
         offload_enabled=False),
    # --- certificate_mode: where certificates are rendered -----------------------------------
    case("certificates-cloud-on-a-cloud-job", "aws", [">= threshold 1000"], "cloud",
         certificate_mode="cloud"),
    case("certificates-cloud-if-enabled-on-a-cloud-job", "aws", [">= threshold 1000"], "cloud",
         certificate_mode="cloud_if_enabled"),
    case("certificates-local-on-a-cloud-job", "aws", [">= threshold 1000"], "local",
         certificate_mode="local"),
    case("certificates-cloud-on-a-local-job-render-here", "local", ["< threshold 1000"],
         "local", certificate_mode="cloud", recipients=5),
    case("certificates-cloud-if-enabled-with-offload-disabled-render-here", "local",
         ["offload.enabled is false"], "local", certificate_mode="cloud_if_enabled",
         offload_enabled=False),
    case("certificates-cloud-on-a-forced-local-job-render-here", "local", ["forces local"],
         "local", certificate_mode="cloud", preference="local"),
]  # fmt: skip


@pytest.mark.parametrize(("over", "route", "reason_words", "certificates"), CASES)
def test_route_and_the_reason_an_admin_reads(over, route, reason_words, certificates):
    chosen = choose_route(**{**BASE, **over})
    assert chosen.route == route, chosen.reason
    assert chosen.is_cloud == (route != "local")
    for words in reason_words:
        assert words in chosen.reason
    assert chosen.certificates == certificates


def test_reason_of_a_config_provider_does_not_blame_a_company():
    chosen = choose_route(**{**BASE, "provider": "local"})
    assert "company" not in chosen.reason


def test_reason_of_the_config_threshold_does_not_name_a_company_without_its_own():
    chosen = choose_route(**{**BASE, "company": CompanyOverride(C12, provider="cloudflare")})
    assert "company" not in chosen.reason and "threshold 1000" in chosen.reason


CLOUD_JOB = Route("aws", "5000 recipients >= threshold 1000", "cloud")


@pytest.mark.parametrize(
    "route",
    [
        pytest.param(CLOUD_JOB, id="aws"),
        pytest.param(Route("cloudflare", "the schedule forces the cloud (cloudflare)", "cloud"),
                     id="cloudflare"),
    ],
)  # fmt: skip
def test_fall_back_queue_local_delivers_here_and_keeps_both_reasons(route):
    fallen = fall_back(route, "SQS did not answer", "queue_local")
    assert fallen is not None
    assert fallen.route == "local" and not fallen.is_cloud
    assert fallen.certificates == "local"  # no cloud worker renders them now
    assert fallen.reason.startswith(route.reason)
    assert "SQS did not answer" in fallen.reason
    assert "queued locally" in fallen.reason and "offload.fallback" in fallen.reason


def test_fall_back_fail_gives_no_route():
    assert fall_back(CLOUD_JOB, "SQS did not answer", "fail") is None
