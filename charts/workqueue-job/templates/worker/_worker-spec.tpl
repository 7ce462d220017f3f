{{/*
The worker Job's fields that the API server never lets change (completions, podFailurePolicy,
the pod template): their digest names the Job (workqueue-job.jobName), so that an upgrade that
changes one of them makes a new Job.
*/}}
{{- define "workqueue-job.worker.fixedSpec" -}}
{{- $indexed := not (include "workqueue-job.usesBroker" .) }}
{{- $w := .Values.worker }}
{{- if eq .Values.mode "coarse" }}
# coarse: one completion per task, counted by the chart, never by hand.
completions: {{ include "workqueue-job.taskCount" . }}
{{- else if eq .Values.mode "fine" }}
# fine: each index is one worker pod's life. The Job controller waits longer before each new
# pod after every failed one, ignored or not (10 s doubling to 10 min), until a pod succeeds
# (kubernetes/kubernetes#119434, pkg/controller/job/backoff_utils.go). So a worker that is
# stopped (deleted, drained, evicted) gives its leases back and succeeds, and the next index
# starts at once. Index 0 alone succeeds only once the queue is drained, which ends the Job.
completionMode: Indexed
completions: {{ $w.maxPods }}
successPolicy:
  rules:
    - succeededIndexes: "0"
{{- else if $indexed }}
# indexed: one index per task. The Job controller retries each index on its own, so a failing
# task never uses up the others' retries, and lists the indexes that failed every attempt in
# status.failedIndexes once every index has run.
completionMode: Indexed
completions: {{ include "workqueue-job.taskCount" . }}
backoffLimitPerIndex: {{ sub (int $w.maxAttempts) 1 }}
{{- end }}
# A new pod only once the one it replaces has ended, never beside a worker still giving its
# leases back (with a podFailurePolicy, Kubernetes allows only this value).
podReplacementPolicy: Failed
# Exit codes as in the README's table (`workqueue --help`). Each listed under FailJob is final:
# a new pod would meet the same settings{{ if not $indexed }}, broker or queue{{ end }}, so the Job fails at once with the
# pod's message instead of retrying or running forever.
podFailurePolicy:
  rules:
    {{- if $indexed }}
    # 2 bad settings (a command not found, a cluster without backoffLimitPerIndex), 4 the task
    # list does not match the Job (a tasksFrom ConfigMap missing or changed). 1 (the task
    # failed) and 143 (SIGTERM) count against the pod's index.
    - action: FailJob
      onExitCodes:
        containerName: worker
        operator: In
        values: [2, 4]
    {{- else }}
    # 2 bad settings or credentials, 3 tasks dead-lettered with onDead=fail, 4 the seeder
    # could not seed (its reason follows), 5 broker away past brokerOutageSeconds, 6 broker
    # lost the queue, 7 no seeding within seedTimeoutSeconds, 8 the queue holds another run.
    - action: FailJob
      onExitCodes:
        containerName: worker
        operator: In
        values: [2, 3, 4, 5, 6, 7, 8]
    # A worker pod lost is not a failed run: the queue gives its tasks to another worker and
    # charges the one that was running. 143: stopped by SIGTERM (a deletion, a drain), its
    # leases given back; 137: killed (a forced deletion past its 2 s, an OOM kill). Anything
    # else, such as 1 for a crash at start, counts against backoffLimit.
    - action: Ignore
      onExitCodes:
        containerName: worker
        operator: In
        values: [137, 143]
    {{- end }}
    # Evictions, preemptions and lost nodes (PodGC) are not the task's fault either.
    - action: Ignore
      onPodConditions:
        - type: DisruptionTarget
          status: "True"
template:
  metadata:
    labels:
      {{- include "workqueue-job.podLabels" (dict "context" . "component" "worker") | nindent 6 }}
      {{- if not $indexed }}
      {{- include "workqueue-job.brokerClientLabel" . | nindent 6 }}
      {{- end }}
      {{- with .Values.podLabels }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- $annotations := .Values.podAnnotations }}
    {{- if $indexed }}
    {{- /* The run, so that a changed task list or `rerun` makes a new Job (jobName): in the
    queue modes the run's queue name does that. */}}
    {{- $annotations = merge (dict "workqueue-job/run" (include "workqueue-job.runId" .)) $annotations }}
    {{- end }}
    {{- with $annotations }}
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
        command: ["workqueue", {{ ternary "run-index" "work" $indexed | quote }}]
        args:
          {{- if $indexed }}
          - "--tasks"
          - "/tasks"
          {{- end }}
          {{- if $w.handler }}
          - "--handler"
          - {{ $w.handler | quote }}
          {{- else }}
          {{- if not $w.command }}
          {{- fail "worker.command is empty: set the program run once per task (e.g. --set-json 'worker.command=[\"sh\",\"-c\",\"./process-one.sh\"]'), or worker.handler" }}
          {{- end }}
          - "--"
          {{- range $w.command }}
          - {{ . | quote }}
          {{- end }}
          {{- end }}
        env:
          {{- if $indexed }}
          - name: WORKQUEUE_EXPECT_COUNT
            value: {{ include "workqueue-job.taskCount" . | quote }}
          # The Job controller counts the index's failures in this annotation.
          - name: WORKQUEUE_INDEX_FAILURES
            valueFrom:
              fieldRef:
                fieldPath: metadata.annotations['batch.kubernetes.io/job-index-failure-count']
          {{- else }}
          {{- include "workqueue-job.brokerEnv" . | nindent 10 }}
          - {name: WORKQUEUE_MODE, value: {{ .Values.mode | quote }}}
          - {name: WORKQUEUE_LEASE_SECONDS, value: {{ $w.leaseSeconds | quote }}}
          - {name: WORKQUEUE_BATCH_SIZE, value: {{ $w.batchSize | quote }}}
          - {name: WORKQUEUE_BATCH_SECONDS, value: {{ $w.batchSeconds | quote }}}
          - {name: WORKQUEUE_ON_DEAD, value: {{ $w.onDead | quote }}}
          - {name: WORKQUEUE_SEED_TIMEOUT, value: {{ $w.seedTimeoutSeconds | quote }}}
          - {name: WORKQUEUE_RETRY_DELAY, value: {{ $w.retryDelaySeconds | quote }}}
          - {name: WORKQUEUE_RETRY_DELAY_MAX, value: {{ $w.retryDelayMaxSeconds | quote }}}
          - {name: WORKQUEUE_CAPTURE_RESULT, value: {{ $w.captureResult | quote }}}
          - {name: WORKQUEUE_CONNECT_TIMEOUT, value: {{ $w.brokerOutageSeconds | quote }}}
          - {name: WORKQUEUE_OUTAGE_SECONDS, value: {{ $w.brokerOutageSeconds | quote }}}
          {{- if include "workqueue-job.workerMetrics" . }}
          - {name: WORKQUEUE_METRICS_PORT, value: {{ .Values.metrics.workers.port | quote }}}
          {{- end }}
          {{- end }}
          - {name: WORKQUEUE_MAX_ATTEMPTS, value: {{ $w.maxAttempts | quote }}}
          {{- if $w.taskTimeoutSeconds }}
          - {name: WORKQUEUE_TASK_TIMEOUT, value: {{ $w.taskTimeoutSeconds | quote }}}
          {{- end }}
          - name: WORKQUEUE_GRACE_SECONDS
            value: {{ max 1 (sub (int $w.terminationGracePeriodSeconds) 10) | quote }}
          {{- range $w.env }}
          {{- if and (hasPrefix "WORKQUEUE_" .name) (ne .name "WORKQUEUE_LOG_LEVEL") }}
          {{- fail (printf "worker.env sets %s, which the chart sets from its values (a second entry would point workers elsewhere than the seeder, or override their limits): remove it and set the matching value (values.yaml); only WORKQUEUE_LOG_LEVEL may be set here" .name) }}
          {{- end }}
          {{- end }}
          {{- with $w.env }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        {{- if include "workqueue-job.workerMetrics" . }}
        ports:
          - {name: metrics, containerPort: {{ .Values.metrics.workers.port }}, protocol: TCP}
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
          {{- if $indexed }}
          - {name: tasks, mountPath: /tasks, readOnly: true}
          {{- else }}
          {{- include "workqueue-job.brokerAuthMount" . | nindent 10 }}
          {{- end }}
          {{- with $w.extraVolumeMounts }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
    volumes:
      - name: tmp
        emptyDir: {}
      {{- if $indexed }}
      {{- include "workqueue-job.tasksVolume" . | nindent 6 }}
      {{- else }}
      {{- include "workqueue-job.brokerAuthVolume" . | nindent 6 }}
      {{- end }}
      {{- with $w.extraVolumes }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
{{- end }}
