"""Every annotation key, label key, on-node path and port, in one place (as MCO's constants.go)."""
from __future__ import annotations

GROUP = "machineconfiguration.openshift.io"
API_VERSION = f"{GROUP}/v1"

# Labels
ROLE_LABEL = f"{GROUP}/role"

# Annotations
GENERATED_BY_CONTROLLER_VERSION_ANNOTATION = f"{GROUP}/generated-by-controller-version"
RELEASE_IMAGE_VERSION_ANNOTATION = f"{GROUP}/release-image-version"
OS_IMAGE_URL_OVERRIDDEN_ANNOTATION = f"{GROUP}/os-image-url-overridden"
CURRENT_CONFIG_ANNOTATION = f"{GROUP}/currentConfig"
DESIRED_CONFIG_ANNOTATION = f"{GROUP}/desiredConfig"
MACHINE_CONFIG_DAEMON_STATE_ANNOTATION = f"{GROUP}/state"
MACHINE_CONFIG_DAEMON_REASON_ANNOTATION = f"{GROUP}/reason"
DESIRED_DRAIN_ANNOTATION = f"{GROUP}/desiredDrain"
LAST_APPLIED_DRAIN_ANNOTATION = f"{GROUP}/lastAppliedDrain"

# The MCO build our rendered configs claim to come from (see spec: rendered name and hash).
CONTROLLER_VERSION = "7ff337a4ffac8e7562692181178ede61e4b2eec5"

# Ignition
INTERNAL_IGNITION_VERSION = "3.5.0"

# Server ports
SECURE_PORT = 22623
INSECURE_PORT = 22624

# Annotations the daemon writes (the node API lets a node change only these on its own record).
POST_CONFIG_ACTION_ANNOTATION = f"{GROUP}/post-config-action"
FIRST_PIVOT_CONFIG_ANNOTATION = f"{GROUP}/firstPivotConfig"
# the ControllerConfig resourceVersion whose CA bundles the certificate writer last wrote
LAST_SYNCED_CONTROLLER_CONFIG_ANNOTATION = f"{GROUP}/lastSyncedControllerConfigResourceVersion"
# the ControllerConfig's service-ca-rotate value the certificate writer last acted on
LAST_OBSERVED_SERVER_CA_ANNOTATION = f"{GROUP}/lastObservedServerCAAnnotation"
# on the ControllerConfig: "true" when the kube-apiserver CA bundle of the nodes' kubeconfig changed
SERVICE_CA_ROTATE_ANNOTATION = f"{GROUP}/service-ca-rotate"
DAEMON_OWNED_ANNOTATIONS = frozenset({
    CURRENT_CONFIG_ANNOTATION, MACHINE_CONFIG_DAEMON_STATE_ANNOTATION,
    MACHINE_CONFIG_DAEMON_REASON_ANNOTATION, DESIRED_DRAIN_ANNOTATION,
    POST_CONFIG_ACTION_ANNOTATION, FIRST_PIVOT_CONFIG_ANNOTATION,
    LAST_SYNCED_CONTROLLER_CONFIG_ANNOTATION, LAST_OBSERVED_SERVER_CA_ANNOTATION,
})
CONTROLLER_CONFIG_NAME = "machine-config-controller"  # the one ControllerConfig MCO uses

# Served to a joining machine in store mode (mode 0600): how its daemon reaches the node API.
# A JSON object: "server" (base URL), "pool", "token" (the pool's bootstrap token) and, when the
# server has TLS, "ca" (PEM of the CA that signed the server certificate).
NODE_CREDENTIALS_PATH = "/etc/machine-config-daemon/node-credentials.json"

# Node API (served next to /config/<pool>).
NODE_API_PREFIX = "/api/v1"
# Longest single long poll of the node API: a quiet node wakes once per this many seconds. The
# server gives a watch response this long plus a margin (ConnectionGuard.extend) and the client
# waits this plus its slack before calling the server dead.
NODE_API_MAX_WATCH_SECONDS = 300.0

# Annotations the controller writes besides desiredConfig/lastAppliedDrain.
DESIRED_IMAGE_ANNOTATION = f"{GROUP}/desiredImage"
# Copied by the node controller from the ControllerConfig's infrastructure status; the daemon
# skips the drain on SingleReplica.
CONTROL_PLANE_TOPOLOGY_ANNOTATION = f"{GROUP}/controlPlaneTopology"
# Set by our drain controller when it cordoned the node itself: an uncordon request clears only
# such a cordon, never one an administrator made (a deliberate difference from MCO).
CORDONED_BY_MCC_ANNOTATION = f"{GROUP}/cordonedByMCC"
# Set by our drain controller while a drain stays blocked: the pods, and the PodDisruptionBudgets
# that refused their eviction, that keep the node from draining (at most 2000 characters, like
# the daemon's reason); removed when the drain completes or the request changes.
DRAIN_REASON_ANNOTATION = f"{GROUP}/drainReason"

# Values of the daemon's state annotation.
STATE_WORKING = "Working"
STATE_DONE = "Done"
STATE_DEGRADED = "Degraded"
STATE_UNRECONCILABLE = "Unreconcilable"

# Per-node overlays (ours, not MCO's): MachineConfigs merged after a pool's configs for the
# nodes they select, into a per-node rendered config with the pool's name rules (mcc.overlay).
# A MachineConfig label naming one node; such a config is never part of a pool's render.
OVERLAY_NODE_LABEL = f"{GROUP}/node"
# A MachineConfig annotation: a label selector (YAML/JSON, matchLabels/matchExpressions) over
# node labels; it too makes the config an overlay.
OVERLAY_NODE_SELECTOR_ANNOTATION = "machine-config.io/node-selector"
# On a Node, written by the controller only: the node's own target (its pool's configs and its
# overlays merged); absent on a node without overlays, which follows its pool's target.
NODE_CONFIG_ANNOTATION = "machine-config.io/node-config"
# On a per-node rendered MachineConfig (metadata, not hashed): the overlays merged into it.
OVERLAYS_ANNOTATION = "machine-config.io/overlays"

# On-node paths shared by the server (which writes some into served configs), firstboot and the
# daemon. MCO's names.
DAEMON_DIR = "/etc/machine-config-daemon"
# the node's annotations at first boot (served in the pointer's merged config; MCO's
# node-annotations.json), and the name MCO's firstboot renames it to once read
NODE_ANNOTATIONS_PATH = f"{DAEMON_DIR}/node-annotations.json"
NODE_ANNOTATIONS_BACKUP_PATH = f"{DAEMON_DIR}/node-annotation.json.bak"
# the full rendered config a joining machine gets inside its Ignition, for firstboot to apply
ENCAPSULATED_CONFIG_PATH = "/etc/ignition-machine-config-encapsulated.json"
# the rendered config the daemon last applied completely (the whole MachineConfig as JSON)
CURRENT_CONFIG_PATH = f"{DAEMON_DIR}/currentconfig"
# the daemon's own state (state, reason, progress), survives reboots
DAEMON_STATE_PATH = f"{DAEMON_DIR}/state.json"
# touch it to make the daemon apply the desired config again without the reconcilability check
FORCE_FILE_PATH = "/run/machine-config-daemon-force"

# Component names (field manager, events' source, User-Agent).
CONTROLLER_NAME = "machine-config-controller"
DAEMON_NAME = "machine-config-daemon"

# Store URL schemes (parsed in machineconfig.store only).
STORE_LOCAL = "local"
STORE_KUBE = "kube"

# core: MachineConfigPool condition types written by mcc.pool_status and read by machineconfig.status.
POOL_DEGRADED_CONDITION = "Degraded"
MAINTENANCE_WINDOW_CONDITION = "MaintenanceWindow"  # ours (mcc.windows): True while one is open
