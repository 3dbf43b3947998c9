{{/* Labels on every object. The selector keeps only app.kubernetes.io/name, as `meshtrust render agent` does, so
     a release can take over a Deployment created from rendered files (selectors are immutable). */}}
{{- define "meshtrust-agent.labels" -}}
app.kubernetes.io/name: meshtrust-agent
app.kubernetes.io/part-of: meshtrust
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "meshtrust-agent.selector" -}}
app.kubernetes.io/name: meshtrust-agent
{{- end }}

{{/* The ConfigMap holding mesh.yaml. */}}
{{- define "meshtrust-agent.meshConfigMap" -}}
{{- default "meshtrust-mesh" .Values.existingMeshConfigMap }}
{{- end }}

{{/* The agent runs only once it knows its cluster and has a mesh file; before that the chart installs RBAC only. */}}
{{- define "meshtrust-agent.runs" -}}
{{- if and .Values.cluster (or .Values.mesh .Values.existingMeshConfigMap) }}true{{ end }}
{{- end }}

{{/* The peers whose remote secrets the agent owns: every other cluster of the mesh file, then .Values.peers. */}}
{{- define "meshtrust-agent.peers" -}}
{{- $peers := list -}}
{{- if .Values.mesh -}}
{{- range ((fromYaml .Values.mesh).clusters | default list) -}}
{{- if and .name (ne .name $.Values.cluster) -}}
{{- $peers = append $peers .name -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- concat $peers .Values.peers | toYaml -}}
{{- end }}

{{/* Whether the agent gets OpenBao's CA (BAO_CACERT); refuses more than one source. */}}
{{- define "meshtrust-agent.openbaoCa" -}}
{{- $o := .Values.openbao -}}
{{- $n := 0 -}}
{{- if $o.caCert }}{{ $n = add1 $n }}{{ end -}}
{{- if $o.caCertSecret.name }}{{ $n = add1 $n }}{{ end -}}
{{- if $o.caCertConfigMap.name }}{{ $n = add1 $n }}{{ end -}}
{{- if gt $n 1 }}{{ fail "set at most one of openbao.caCert, openbao.caCertSecret.name and openbao.caCertConfigMap.name" }}{{ end -}}
{{- if gt $n 0 }}true{{ end -}}
{{- end }}
