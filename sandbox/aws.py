"""EC2 and Auto Scaling for the sandbox: moto as the cloud, and a bridge that makes Nodes follow instances.

- ``MotoServer`` runs moto's server mode in this process: a real HTTP endpoint that boto3 and Airflow's
  amazon provider reach through ``endpoint_url``.
- ``provision_node_groups`` builds what a self-managed EKS data plane looks like in EC2: a VPC with one
  subnet per Availability Zone, a launch template per node group, and Auto Scaling groups tagged for
  the cluster.
- ``CloudBridge`` plays the kubelets and the cloud-node-lifecycle controller: every running instance
  of the cluster registers a Node after it booted; an instance that goes away leaves a Node that turns
  NotReady and is then deleted (the pod GC then removes its pods).
"""
from __future__ import annotations

import copy
import datetime as dt
import functools
import hashlib
import ipaddress
import logging
import threading
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import boto3
from botocore.config import Config as BotoConfig

from .events import record_event
from .resources import NODES
from .testing import node_manifest

if TYPE_CHECKING:
    from .cluster import SandboxCluster

log = logging.getLogger("sandbox.aws")

# moto accepts any credentials; they are passed to every client explicitly so that nothing here
# depends on (or leaks into) the environment's AWS configuration.
FAKE_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
FAKE_ACCOUNT_ID = "123456789012"  # moto's default account, which unknown access keys map to

CLUSTER_TAG_PREFIX = "kubernetes.io/cluster/"  # value "owned": the cluster's own resources
NODE_TEMPLATE_LABEL_TAG = "k8s.io/cluster-autoscaler/node-template/label/"  # the labels a group's nodes get
ASG_NAME_TAG = "aws:autoscaling:groupName"  # put on every instance an Auto Scaling group launches
LAUNCH_TEMPLATE_TAG = "aws:ec2launchtemplate:id"  # put by EC2 on every instance launched from a template
NODEGROUP_LABEL = "eks.amazonaws.com/nodegroup"  # names the node group (here: the ASG) a node belongs to
CAPACITY_TYPE_LABEL = "eks.amazonaws.com/capacityType"
NODE_IMAGE_LABEL = "eks.amazonaws.com/nodegroup-image"
NODE_AMI = "ami-0f3c1b6e2a8d4c5b7"  # an EKS-optimised AL2023 image, as far as the sandbox is concerned

# (cpu, memory, max pods) a kubelet reports for an instance type; max pods is what the VPC CNI allows
# (ENIs x IPs per ENI), which EKS's bootstrap passes to the kubelet.
INSTANCE_CAPACITY: dict[str, tuple[str, str, int]] = {
    "t3.medium": ("2", "3955652Ki", 17),
    "t3.large": ("2", "7943012Ki", 35),
    "m5.large": ("2", "7934460Ki", 29),
    "m5.xlarge": ("4", "15889388Ki", 58),
    "m5.2xlarge": ("8", "32126088Ki", 58),
    "c5.large": ("2", "3878344Ki", 29),
    "c5.xlarge": ("4", "7721260Ki", 58),
    "c5.2xlarge": ("8", "15665372Ki", 58),
    "r5.large": ("2", "16073412Ki", 29),
    "r5.xlarge": ("4", "32300988Ki", 58),
}
DEFAULT_CAPACITY = INSTANCE_CAPACITY["m5.large"]

# EC2 instance states, grouped by what they mean for the kubelet on the instance.
RUNNING_STATES = frozenset({"pending", "running"})
STOPPED_STATES = frozenset({"stopping", "stopped"})  # kubelet silent, instance still exists
GONE_STATES = frozenset({"shutting-down", "terminated"})  # instance no longer exists for the cloud provider
MISSING = "missing"  # not even returned by DescribeInstances any more


def aws_client(service: str, endpoint_url: str, region: str) -> Any:
    """A boto3 client for moto with fake credentials and short timeouts (never the environment's)."""
    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        config=BotoConfig(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=20),
        **FAKE_CREDENTIALS,
    )


# ------------------------------------------------------------------------------------------- moto
class MotoServer:
    """moto's server mode on 127.0.0.1, on a free port, in a thread of this process."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._server: Any = None

    def start(self) -> "MotoServer":
        from moto.server import ThreadedMotoServer

        _make_moto_launch_like_aws()
        # werkzeug would print one line per AWS request to stderr.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self._server.start()
        self.host, self.port = self._server.get_host_and_port()
        log.info("moto serving EC2 and Auto Scaling on %s", self.url)
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reset(self) -> None:
        """Forget every AWS resource. moto's backends are global to the process, so this also
        clears what any other moto server or ``mock_aws`` in this process holds."""
        request = urllib.request.Request(self.url + "/moto-api/reset", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def stop(self) -> None:
        if self._server is None:
            return
        try:
            self.reset()  # leave no VPCs or groups behind for the next server in this process
        except OSError:
            log.warning("could not reset moto at %s", self.url)
        self._server.stop()
        self._server = None

    def __enter__(self) -> "MotoServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _make_moto_launch_like_aws() -> None:
    """Make moto 5's Auto Scaling launches look like AWS's where the sandbox shows the difference.

    - moto puts every instance of a group into the group's first subnet, so a group never spans
      zones; AWS balances launches across the group's Availability Zones (the zone with the fewest
      instances gets the next one).
    - moto's Auto Scaling launch path leaves the instance's region at the EC2 model's default, so
      every group instance is named like ``ip-10-0-1-4.ec2.internal`` (us-east-1's form) in every
      region; EC2 names it ``ip-10-0-1-4.eu-west-1.compute.internal`` outside us-east-1, and the
      kubelet names its Node after that.

    - moto reports an instance's launch template version as the group's template's *current*
      default at the time of the question; AWS records the version the instance was launched
      from (the group's version, "$Latest" or "$Default" resolved then), which is how drifted
      instances are told apart.

    The moto server runs in this process, so wrapping the one launch method fixes these for every
    group. Applied once; idempotent.
    """
    from moto.autoscaling.models import FakeAutoScalingGroup, InstanceState

    original = FakeAutoScalingGroup.replace_autoscaling_group_instances
    if getattr(original, "_sandbox_balanced", False):
        return

    @functools.wraps(original)
    def launch_balanced(group: Any, count_needed: int, propagated_tags: dict[str, str]) -> None:
        subnets = [s for s in (group.vpc_zone_identifier or "").split(",") if s]
        known = {id(state) for state in group.instance_states}
        if len(subnets) < 2:
            original(group, count_needed, propagated_tags)
        else:
            identifier = group.vpc_zone_identifier
            try:
                for _ in range(count_needed):
                    per_subnet = Counter(state.instance.subnet_id for state in group.instance_states)
                    subnet = min(subnets, key=lambda s: per_subnet[s])  # ties: the first listed
                    # moto launches into the first subnet of the identifier: put the chosen one first.
                    group.vpc_zone_identifier = ",".join([subnet] + [s for s in subnets if s != subnet])
                    original(group, 1, dict(propagated_tags))
            finally:
                group.vpc_zone_identifier = identifier
        region = group.autoscaling_backend.region_name
        template = group.ec2_launch_template
        launched_from = None
        if template is not None:
            launched_from = {
                "LaunchTemplateId": template.id,
                "LaunchTemplateName": template.name,
                "Version": str(template.get_version(group.provided_launch_template_version or "$Default").number),
            }
        for state in group.instance_states:
            if id(state) not in known:
                state.instance.region_name = region
                state.sandbox_launched_from = launched_from

    launch_balanced._sandbox_balanced = True  # type: ignore[attr-defined]
    FakeAutoScalingGroup.replace_autoscaling_group_instances = launch_balanced  # type: ignore[method-assign]
    reported = InstanceState.launch_template

    def launch_template_launched_from(state: Any) -> Any:
        launched_from = getattr(state, "sandbox_launched_from", None)
        if launched_from is None:
            # An attached instance: what it was launched from is on its own EC2 tags.
            tags = {t["key"]: t["value"] for t in state.instance.get_tags()}
            template_id = tags.get(LAUNCH_TEMPLATE_TAG)
            if template_id:
                launched_from = {"LaunchTemplateId": template_id, "Version": tags.get("aws:ec2launchtemplate:version")}
        return launched_from or reported.fget(state)

    InstanceState.launch_template = property(launch_template_launched_from)  # type: ignore[assignment,method-assign]


# ------------------------------------------------------------------------------------ provisioning
@dataclass(frozen=True)
class NodeGroup:
    """One Auto Scaling group of worker nodes (its name is also the node group's name)."""

    name: str
    instance_type: str = "m5.large"
    desired: int = 3
    min_size: int = 1
    max_size: int = 10
    labels: Mapping[str, str] = field(default_factory=dict)  # extra labels its kubelets register with
    age_seconds: float = 0.0  # how long ago its first instances launched (Nodes are that old too)


@dataclass
class ProvisionedNetwork:
    """What ``provision_node_groups`` created, by id."""

    region: str
    vpc_id: str
    subnets: dict[str, str]  # Availability Zone -> subnet id
    launch_templates: dict[str, str]  # node group -> launch template id
    groups: list[str]  # Auto Scaling group names


def vpc_cidr_for(cluster_name: str) -> str:
    """A /16 per cluster (10.16.0.0 - 10.239.0.0), so two clusters in one region never share private
    addresses, and so never share Node names."""
    second_octet = 16 + int(hashlib.sha256(cluster_name.encode()).hexdigest()[:4], 16) % 224
    return f"10.{second_octet}.0.0/16"


def provision_node_groups(
    moto_url: str,
    region: str,
    cluster_name: str,
    groups: Iterable[NodeGroup],
    zone_count: int = 3,
    vpc_cidr: str | None = None,
) -> ProvisionedNetwork:
    """Create the cluster's VPC (one subnet per zone), launch templates and Auto Scaling groups.

    Groups are tagged as eksctl and the cluster autoscaler expect: ``kubernetes.io/cluster/<name>=owned``
    (propagated to instances, which is how the bridge finds them), the autoscaler's discovery tags,
    and one ``k8s.io/cluster-autoscaler/node-template/label/<key>`` tag per extra node label.
    """
    ec2 = aws_client("ec2", moto_url, region)
    autoscaling = aws_client("autoscaling", moto_url, region)
    cidr = ipaddress.ip_network(vpc_cidr or vpc_cidr_for(cluster_name))
    cluster_tag = CLUSTER_TAG_PREFIX + cluster_name

    vpc_id = ec2.create_vpc(
        CidrBlock=str(cidr),
        TagSpecifications=[{"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": f"{cluster_name}-vpc"}, {"Key": cluster_tag, "Value": "shared"}]}],
    )["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})
    zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"] if z.get("State", "available") == "available"]
    zones = sorted(zones)[:zone_count]
    subnets: dict[str, str] = {}
    for zone, block in zip(zones, cidr.subnets(new_prefix=20)):
        subnets[zone] = ec2.create_subnet(
            VpcId=vpc_id,
            CidrBlock=str(block),
            AvailabilityZone=zone,
            TagSpecifications=[
                {
                    "ResourceType": "subnet",
                    "Tags": [
                        {"Key": "Name", "Value": f"{cluster_name}-private-{zone}"},
                        {"Key": cluster_tag, "Value": "shared"},
                        {"Key": "kubernetes.io/role/internal-elb", "Value": "1"},
                    ],
                }
            ],
        )["Subnet"]["SubnetId"]

    launch_templates: dict[str, str] = {}
    names: list[str] = []
    for group in groups:
        launch_templates[group.name] = ec2.create_launch_template(
            LaunchTemplateName=group.name,
            LaunchTemplateData={
                "ImageId": NODE_AMI,
                "InstanceType": group.instance_type,
                "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 2},
            },
        )["LaunchTemplate"]["LaunchTemplateId"]
        tags = {
            "Name": f"{cluster_name}-{group.name}-Node",
            cluster_tag: "owned",
            "k8s.io/cluster-autoscaler/enabled": "true",
            f"k8s.io/cluster-autoscaler/{cluster_name}": "owned",
            "alpha.eksctl.io/cluster-name": cluster_name,
            "alpha.eksctl.io/nodegroup-name": group.name,
        }
        for key, value in group.labels.items():
            tags[NODE_TEMPLATE_LABEL_TAG + key] = value
        autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=group.name,
            LaunchTemplate={"LaunchTemplateId": launch_templates[group.name], "Version": "$Latest"},
            MinSize=group.min_size,
            MaxSize=group.max_size,
            DesiredCapacity=group.desired,
            VPCZoneIdentifier=",".join(subnets.values()),
            HealthCheckType="EC2",
            HealthCheckGracePeriod=300,
            Tags=[
                {"ResourceId": group.name, "ResourceType": "auto-scaling-group", "Key": k, "Value": v, "PropagateAtLaunch": True}
                for k, v in tags.items()
            ],
        )
        names.append(group.name)
        if group.age_seconds > 0:
            described = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group.name])["AutoScalingGroups"][0]
            _backdate_launch_time(region, [i["InstanceId"] for i in described["Instances"]], group.age_seconds)
    return ProvisionedNetwork(region, vpc_id, subnets, launch_templates, names)


def _backdate_launch_time(region: str, instance_ids: list[str], age_seconds: float) -> None:
    """Make instances look launched ``age_seconds`` ago.

    EC2 has no API for this; the moto server runs in this process, so its backend is reachable. The
    bridge then registers their Nodes as just as old, which is what node-age rules look at.
    """
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[FAKE_ACCOUNT_ID][region]
    for instance_id in instance_ids:
        try:
            instance = backend.get_instance(instance_id)
        except Exception:  # noqa: BLE001 - a moto server in another process: ages stay at zero
            log.warning("instance %s is not in this process's moto; its node will look new", instance_id)
            continue
        instance.launch_time = instance.launch_time - dt.timedelta(seconds=age_seconds)


# ----------------------------------------------------------------------------------------- bridge
@dataclass
class TrackedInstance:
    """One EC2 instance of the cluster and where its Node is in its life."""

    instance_id: str
    node_name: str  # the instance's private DNS name, as the kubelet registers it
    zone: str
    instance_type: str
    private_ip: str
    image_id: str
    group: str | None  # the Auto Scaling group that launched it
    labels: dict[str, str]  # extra labels the kubelet registers with (the group's node-template labels)
    boot_started: float  # cluster-clock seconds: when the instance started booting
    state: str = "running"
    node_uid: str | None = None  # set once the Node is registered
    ready_posted: bool = False
    never_ready: bool = False
    gone_since: float | None = None  # when the bridge saw the instance stop or disappear
    marked_not_ready: bool = False

    @property
    def provider_id(self) -> str:
        return f"aws:///{self.zone}/{self.instance_id}"


class CloudBridge:
    """Keeps a cluster's Nodes in step with its EC2 instances, polling every ``asg_poll_seconds``.

    Plays the kubelets (register a Node ``node_boot_seconds`` after the instance started: first
    NotReady, then Ready; never Ready for the nodes ``faults.never_ready_nodes`` claims) and the
    cloud-node-lifecycle controller (a Node whose instance went away turns NotReady after
    ``node_notready_seconds`` and is deleted ``node_delete_seconds`` later). It also performs the
    Auto Scaling group's EC2 health check that moto lacks: a stopped member instance is replaced.
    """

    def __init__(self, cluster: "SandboxCluster", moto_url: str, region: str, cluster_name: str | None = None) -> None:
        self.cluster = cluster
        self.moto_url = moto_url
        self.region = region
        self.cluster_name = cluster_name or cluster.name
        self.cluster_tag = CLUSTER_TAG_PREFIX + self.cluster_name
        self._ec2 = aws_client("ec2", moto_url, region)
        self._autoscaling = aws_client("autoscaling", moto_url, region)
        self._instances: dict[str, TrackedInstance] = {}
        self._finished: set[str] = set()  # instance ids whose Node came and went
        self._first_poll = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    # ------------------------------------------------------------------------------- lifecycle
    def start(self) -> "CloudBridge":
        """Attach to the cluster: one poll right away (so existing instances have Nodes), then a thread."""
        self.cluster.cloud = self
        self.poll_once()
        self._thread = threading.Thread(target=self._run, name=f"cloud-bridge-{self.cluster.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.cluster.config.asg_poll_seconds):
            try:
                self.poll_once()
            except Exception as exc:  # noqa: BLE001 - moto hiccups must not kill the bridge
                if self._stop.is_set():
                    return
                log.warning("cloud bridge for %s: %s", self.cluster.name, exc)
                self.errors.append(repr(exc))

    # ------------------------------------------------------------------------------------ reads
    def node_name_for(self, instance_id: str) -> str | None:
        tracked = self._instances.get(instance_id)
        return tracked.node_name if tracked else None

    def instance_for_node(self, node_name: str) -> str | None:
        for tracked in list(self._instances.values()):
            if tracked.node_name == node_name:
                return tracked.instance_id
        return None

    # ------------------------------------------------------------------------------------- poll
    def poll_once(self) -> None:
        """Look at EC2 and Auto Scaling once, then move every Node along its timeline."""
        groups = self._describe_groups()
        instances = self._describe_instances()
        now = self.cluster.clock.time()
        to_replace: list[str] = []
        with self.cluster.store.lock:
            self._observe(groups, instances, now, to_replace)
            self._advance(now)
        self._first_poll = False
        for instance_id in to_replace:
            self._replace_unhealthy(instance_id)

    def _describe_groups(self) -> list[dict[str, Any]]:
        paginator = self._autoscaling.get_paginator("describe_auto_scaling_groups")
        groups: list[dict[str, Any]] = []
        for page in paginator.paginate(Filters=[{"Name": "tag-key", "Values": [self.cluster_tag]}]):
            groups.extend(page["AutoScalingGroups"])
        return groups

    def _describe_instances(self) -> dict[str, dict[str, Any]]:
        """Every instance tagged for the cluster, terminated ones included (EC2 lists those for a while)."""
        paginator = self._ec2.get_paginator("describe_instances")
        out: dict[str, dict[str, Any]] = {}
        for page in paginator.paginate(Filters=[{"Name": "tag-key", "Values": [self.cluster_tag]}]):
            for reservation in page["Reservations"]:
                for instance in reservation["Instances"]:
                    out[instance["InstanceId"]] = instance
        return out

    def _observe(
        self,
        groups: list[dict[str, Any]],
        instances: dict[str, dict[str, Any]],
        now: float,
        to_replace: list[str],
    ) -> None:
        member_of: dict[str, str] = {}
        group_of_template: dict[str, str] = {}
        group_labels: dict[str, dict[str, str]] = {}
        for group in groups:
            name = group["AutoScalingGroupName"]
            template_id = (group.get("LaunchTemplate") or {}).get("LaunchTemplateId")
            if template_id:
                # Its kubelet's node group and labels come from the launch template (the node
                # group's user data), so an instance launched from it outside the group, to be
                # attached, registers as one of the group's nodes too.
                group_of_template.setdefault(template_id, name)
            group_labels[name] = {
                tag["Key"][len(NODE_TEMPLATE_LABEL_TAG):]: tag["Value"]
                for tag in group.get("Tags") or ()
                if tag["Key"].startswith(NODE_TEMPLATE_LABEL_TAG)
            }
            for member in group.get("Instances") or ():
                member_of[member["InstanceId"]] = name
        for instance_id, tracked in list(self._instances.items()):
            if instance_id not in instances:
                self._set_state(tracked, MISSING, now)
        for instance_id, instance in instances.items():
            state = instance["State"]["Name"]
            tracked = self._instances.get(instance_id)
            if tracked is None:
                if instance_id in self._finished or state not in RUNNING_STATES:
                    continue
                if not instance.get("PrivateDnsName"):
                    continue  # no address yet: the kubelet cannot register
                self._instances[instance_id] = self._track(instance, member_of, group_of_template, group_labels, now)
                continue
            self._set_state(tracked, state, now)
            if state in STOPPED_STATES and instance_id in member_of:
                to_replace.append(instance_id)

    def _track(
        self,
        instance: dict[str, Any],
        member_of: dict[str, str],
        group_of_template: dict[str, str],
        group_labels: dict[str, dict[str, str]],
        now: float,
    ) -> TrackedInstance:
        tags = {t["Key"]: t["Value"] for t in instance.get("Tags") or ()}
        group = member_of.get(instance["InstanceId"]) or tags.get(ASG_NAME_TAG) or group_of_template.get(tags.get(LAUNCH_TEMPLATE_TAG, ""))
        launched = instance["LaunchTime"].timestamp()
        # Instances already running when the bridge attached have been booting since their launch
        # (long ago for an aged cluster); one that appears later boots from now on (LaunchTime only
        # has whole seconds, too coarse for the sandbox's sub-second boot delays).
        boot_started = min(launched, now) if self._first_poll else now
        return TrackedInstance(
            instance_id=instance["InstanceId"],
            node_name=instance["PrivateDnsName"],
            zone=instance["Placement"]["AvailabilityZone"],
            instance_type=instance["InstanceType"],
            private_ip=instance.get("PrivateIpAddress", ""),
            image_id=instance.get("ImageId", ""),
            group=group,
            labels=dict(group_labels.get(group or "", {})),
            boot_started=boot_started,
            state=instance["State"]["Name"],
        )

    @staticmethod
    def _set_state(tracked: TrackedInstance, state: str, now: float) -> None:
        if state in RUNNING_STATES:
            # Started again after a stop before its Node was deleted: the kubelet reports again.
            if tracked.gone_since is not None and tracked.state in STOPPED_STATES:
                tracked.gone_since = None
                tracked.marked_not_ready = False
                tracked.ready_posted = False
                tracked.boot_started = now
        elif tracked.gone_since is None:
            tracked.gone_since = now
        tracked.state = state

    def _replace_unhealthy(self, instance_id: str) -> None:
        """What the group's EC2 health check does with a stopped instance: terminate and replace it."""
        try:
            self._autoscaling.set_instance_health(InstanceId=instance_id, HealthStatus="Unhealthy")
            self._autoscaling.terminate_instance_in_auto_scaling_group(InstanceId=instance_id, ShouldDecrementDesiredCapacity=False)
        except Exception as exc:  # noqa: BLE001 - tried again at the next poll
            log.warning("could not replace unhealthy instance %s: %s", instance_id, exc)

    # ------------------------------------------------------------------------------- node timeline
    def _advance(self, now: float) -> None:
        config = self.cluster.config
        for tracked in list(self._instances.values()):
            if tracked.gone_since is None:
                register_at = tracked.boot_started + config.node_boot_seconds / 2
                ready_at = tracked.boot_started + config.node_boot_seconds
                if tracked.node_uid is None and now >= register_at:
                    self._register(tracked, register_at, ready_at if now >= ready_at else None)
                elif tracked.node_uid is not None and not tracked.ready_posted and not tracked.never_ready and now >= ready_at:
                    self._post_ready(tracked)
                continue
            if tracked.node_uid is None:
                # Went away before its kubelet registered: nothing to clean up.
                self._forget(tracked)
                continue
            if not tracked.marked_not_ready and now >= tracked.gone_since + config.node_notready_seconds:
                self._mark_not_ready(tracked)
            deletable = tracked.state in GONE_STATES or tracked.state == MISSING
            delete_at = tracked.gone_since + config.node_notready_seconds + config.node_delete_seconds
            if deletable and tracked.marked_not_ready and now >= delete_at:
                self._delete_node(tracked)

    def _own_node(self, tracked: TrackedInstance) -> dict[str, Any] | None:
        node = self.cluster.store.try_get(NODES, None, tracked.node_name)
        if node is None or node["metadata"]["uid"] != tracked.node_uid:
            return None
        return node

    def _register(self, tracked: TrackedInstance, registered_at: float, ready_at: float | None) -> None:
        """The kubelet registers its Node; ``ready_at`` set means it has long been Ready too."""
        cluster = self.cluster
        tracked.never_ready = cluster.faults.take_never_ready_node()
        ready = ready_at is not None and not tracked.never_ready
        manifest = self._node_manifest(tracked, ready, cluster.clock.iso(ready_at if ready_at is not None else registered_at))
        if cluster.store.try_get(NODES, None, tracked.node_name) is not None:
            log.warning("node %s already exists; instance %s not registered", tracked.node_name, tracked.instance_id)
            tracked.node_uid = ""  # never touch someone else's object
            return
        node = cluster.store.create(NODES, manifest)
        if registered_at < cluster.clock.time() - 1:
            node = _backdate(cluster.store, NODES, None, tracked.node_name, cluster.clock.iso(registered_at))
        tracked.node_uid = node["metadata"]["uid"]
        tracked.ready_posted = ready
        record_event(cluster, node, "Normal", "RegisteredNode", f"Node {tracked.node_name} event: Registered Node {tracked.node_name} in Controller", "node-controller")
        if ready:
            record_event(cluster, node, "Normal", "NodeReady", f"Node {tracked.node_name} status is now: NodeReady", "kubelet")

    def _node_manifest(self, tracked: TrackedInstance, ready: bool, since_iso: str) -> dict[str, Any]:
        cpu, memory, max_pods = INSTANCE_CAPACITY.get(tracked.instance_type, DEFAULT_CAPACITY)
        labels = {
            NODEGROUP_LABEL: tracked.group or "",
            CAPACITY_TYPE_LABEL: "ON_DEMAND",
            NODE_IMAGE_LABEL: tracked.image_id,
        }
        if not tracked.group:
            del labels[NODEGROUP_LABEL]
        labels.update(tracked.labels)
        manifest = node_manifest(
            tracked.node_name,
            labels,
            ready=ready,
            zone=tracked.zone,
            instance_type=tracked.instance_type,
            cpu=cpu,
            memory=memory,
            pods=max_pods,
            provider_id=tracked.provider_id,
            now_iso=since_iso,
        )
        now_iso = self.cluster.clock.iso()
        for cond in manifest["status"]["conditions"]:
            cond["lastHeartbeatTime"] = now_iso  # transitions may be old; the heartbeat is fresh
        manifest["metadata"]["annotations"]["alpha.kubernetes.io/provided-node-ip"] = tracked.private_ip
        manifest["status"]["addresses"] = [
            {"type": "InternalIP", "address": tracked.private_ip},
            {"type": "InternalDNS", "address": tracked.node_name},
            {"type": "Hostname", "address": tracked.node_name},
        ]
        return manifest

    def _post_ready(self, tracked: TrackedInstance) -> None:
        from .controllers.nodes import mark_node_ready

        tracked.ready_posted = True
        node = self._own_node(tracked)
        if node is None:
            return
        mark_node_ready(self.cluster, tracked.node_name)
        record_event(self.cluster, node, "Normal", "NodeReady", f"Node {tracked.node_name} status is now: NodeReady", "kubelet")

    def _mark_not_ready(self, tracked: TrackedInstance) -> None:
        from .controllers.nodes import mark_node_not_ready

        tracked.marked_not_ready = True
        node = self._own_node(tracked)
        if node is None:
            return
        mark_node_not_ready(self.cluster, tracked.node_name)
        record_event(self.cluster, node, "Normal", "NodeNotReady", f"Node {tracked.node_name} status is now: NodeNotReady", "node-controller")

    def _delete_node(self, tracked: TrackedInstance) -> None:
        """The cloud-node-lifecycle controller deletes a Node whose instance no longer exists."""
        node = self._own_node(tracked)
        if node is not None:
            record_event(
                self.cluster,
                node,
                "Normal",
                "DeletingNode",
                f"Deleting node {tracked.node_name} because it does not exist in the cloud provider",
                "cloud-node-lifecycle-controller",
            )
            try:
                self.cluster.store.delete(NODES, None, tracked.node_name, preconditions={"uid": tracked.node_uid})
            except Exception as exc:  # noqa: BLE001 - deleted meanwhile by someone else
                log.info("node %s: %s", tracked.node_name, exc)
        self._forget(tracked)

    def _forget(self, tracked: TrackedInstance) -> None:
        self._instances.pop(tracked.instance_id, None)
        self._finished.add(tracked.instance_id)


def _backdate(store: Any, key: str, namespace: str | None, name: str, created_iso: str) -> dict[str, Any]:
    """Give a just-created object the creationTimestamp of one created long ago.

    The apiserver never lets a client set creationTimestamp, so ``Store`` has no API for it, yet an
    aged sandbox cluster needs old Nodes (age rules select nodes by creationTimestamp) and a seeded
    demo whose history is consistent. This writes a new version through the store's own put path
    (a new dict, a new resourceVersion, a MODIFIED event: no stored dict is changed in place). It is
    the only place outside store.py that touches store internals; a ``created_at`` parameter on
    ``Store.create`` would make it unnecessary.
    """
    with store.lock:
        current = store.get(key, namespace, name)
        aged = copy.deepcopy(current)
        aged["metadata"]["creationTimestamp"] = created_iso
        return store._put(key, "MODIFIED", current, aged)  # noqa: SLF001 - see docstring


# ----------------------------------------------------------------------------------- convenience
def attach_cloud(
    cluster: "SandboxCluster",
    moto_url: str,
    region: str,
    groups: Iterable[NodeGroup],
) -> tuple[CloudBridge, ProvisionedNetwork]:
    """Provision the cluster's node groups in moto and start its bridge."""
    network = provision_node_groups(moto_url, region, cluster.name, groups)
    return CloudBridge(cluster, moto_url, region).start(), network

