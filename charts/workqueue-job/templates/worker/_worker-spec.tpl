{{/*
The worker Job's fields that the API server never lets change (completions, podFailurePolicy,
the pod template): their digest names the Job (workqueue-job.jobName), so that an upgrade that
changes one of them makes a new Job.
*/}}
{{- define "workqueue-job.worker.fixedSpec" -}}
{{- $coarse := eq .Values.mode "coarse" }}
{{- $w := .Values.worker }}
{{- if $coarse }}
# coarse: one completion per task, counted by the chart, never by hand.
completions: {{ include "workqueue-job.taskCount" . }}
{{- end }}
# Exit codes as in the README's table (`workqueue --help`). Each listed here is final: a new
# pod would meet the same broker, settings or queue, so the Job fails at once with the pod's
# message instead of retrying up to backoffLimit or running forever. 1 (a bug) and 143
# (SIGTERM) are retried.
podFailurePolicy:
  rules:
    # 2 bad settings or credentials, 3 tasks dead-lettered with onDead=fail, 4 the seeder
    # could not seed (its reason follows), 5 broker away past brokerOutageSeconds, 6 broker
    # lost the queue, 7 no seeding within seedTimeoutSeconds, 8 the queue holds another run.
    - action: FailJob
      onExitCodes:
        containerName: worker
        operator: In
        values: [2, 3, 4, 5, 6, 7, 8]
    # Evictions and preemptions give their items back; they are not the task's fault.
    - action: Ignore
      onPodConditions:
        - type: DisruptionTarget
          status: "True"
template:
  metadata:
    labels:
      {{- include "workqueue-job.podLabels" (dict "context" . "component" "worker") | nindent 6 }}
      {{- include "workqueue-job.brokerClientLabel" . | nindent 6 }}
      {{- with .Values.podLabels }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- with .Values.podAnnotations }}
    annotations:
      {{- toYaml . | nindent 6 }}
    {{- end }}
  spec:
    restartPolicy: Never
    terminationGracePeriodSeconds: {{ $w.terminationGracePeriodSeconds }}
    serviceAccountName: {{ include "workqueue-job.worker.serviceAccountName" . }}
    automountServiceAccountToken: {{ $w.serviceAccount.automountToken }}
    {{- include "workqueue-job.podCommon" (dict "context" . "own" $w) | nindent 4 }}
    securityContext:
      {{- include "workqueue-job.podSecurityContext" . | nindent 6 }}
      fsGroup: {{ include "workqueue-job.runtimeUid" . }}
    containers:
      - name: worker
        image: {{ include "workqueue-job.image" . }}
        imagePullPolicy: {{ .Values.image.pullPolicy }}
        command: ["workqueue", "work"]
        args:
          {{- if $w.handler }}
          - "--handler"
          - {{ $w.handler | quote }}
          {{- else }}
          - "--"
          {{- range $w.command }}
          - {{ . | quote }}
          {{- end }}
          {{- end }}
        env:
          {{- include "workqueue-job.brokerEnv" . | nindent 10 }}
          - {name: WORKQUEUE_MODE, value: {{ .Values.mode | quote }}}
          - {name: WORKQUEUE_MAX_ATTEMPTS, value: {{ $w.maxAttempts | quote }}}
          - {name: WORKQUEUE_LEASE_SECONDS, value: {{ $w.leaseSeconds | quote }}}
          - {name: WORKQUEUE_BATCH_SIZE, value: {{ $w.batchSize | quote }}}
          - {name: WORKQUEUE_ON_DEAD, value: {{ $w.onDead | quote }}}
          - {name: WORKQUEUE_SEED_TIMEOUT, value: {{ $w.seedTimeoutSeconds | quote }}}
          {{- if $w.taskTimeoutSeconds }}
          - {name: WORKQUEUE_TASK_TIMEOUT, value: {{ $w.taskTimeoutSeconds | quote }}}
          {{- end }}
          - {name: WORKQUEUE_CONNECT_TIMEOUT, value: {{ $w.brokerOutageSeconds | quote }}}
          - {name: WORKQUEUE_OUTAGE_SECONDS, value: {{ $w.brokerOutageSeconds | quote }}}
          - name: WORKQUEUE_GRACE_SECONDS
            value: {{ max 1 (sub (int $w.terminationGracePeriodSeconds) 10) | quote }}
          {{- with $w.env }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        {{- with $w.envFrom }}
        envFrom:
          {{- toYaml . | nindent 10 }}
        {{- end }}
        resources:
          {{- toYaml $w.resources | nindent 10 }}
        securityContext:
          {{- include "workqueue-job.containerSecurityContext" (dict "uid" (include "workqueue-job.runtimeUid" .)) | nindent 10 }}
        volumeMounts:
          - {name: tmp, mountPath: /tmp}
          {{- include "workqueue-job.brokerAuthMount" . | nindent 10 }}
          {{- with $w.extraVolumeMounts }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
    volumes:
      - name: tmp
        emptyDir: {}
      {{- include "workqueue-job.brokerAuthVolume" . | nindent 6 }}
      {{- with $w.extraVolumes }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
{{- end }}
