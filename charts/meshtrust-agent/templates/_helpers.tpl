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
