{{/* Full name of the release's objects. */}}
{{- define "kiln.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "kiln.labels" -}}
app.kubernetes.io/name: kiln
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of the operator pod. */}}
{{- define "kiln.selector" -}}
app.kubernetes.io/name: kiln
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "kiln.serviceAccountName" -}}
{{- default (include "kiln.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "kiln.image" -}}
{{- if .Values.image.digest -}}{{ .Values.image.repository }}@{{ .Values.image.digest }}{{- else -}}{{ .Values.image.repository }}:{{ .Values.image.tag }}{{- end -}}
{{- end -}}

{{/* The operator's permissions: no wildcards, no Secrets. */}}
{{- define "kiln.rules" -}}
- apiGroups: ["kiln.dev"]
  resources: ["trainingruns"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["kiln.dev"]
  resources: ["trainingruns/status"]
  verbs: ["get", "patch"]   # also what each run's trainer Role grants, so the operator may create it
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: ["kubeflow.org"]
  resources: ["pytorchjobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads"]
  verbs: ["get", "list"]    # why a run with spec.queue waits, and how often Kueue preempted it
- apiGroups: [""]
  resources: ["services", "serviceaccounts"]
  verbs: ["get", "create", "delete"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "delete", "patch"]   # patch: the serving target's live-version record; watch: trainer progress wakes its run
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "delete", "patch"]   # Triton serving targets and canaries (rollout)
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]    # to tell preemption from failure, and the gate's pods; watch: pod changes wake their run
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]            # the export Job's result line (published version)
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "create", "delete"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch", "list"]   # list: a Job controller's FailedCreate says why a pod was never made
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create"]         # serving targets' repository-API key only; never get/list: no Secret is read
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create"]  # ingress rules of serving and canary pods
{{- end -}}
