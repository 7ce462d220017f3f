{{/*
The seeder Job's fields that the API server never lets change (podFailurePolicy, the pod
template): their digest names the Job (workqueue-job.jobName). A new run, image or setting
makes a new seeder; the same ones keep the finished seeder, so nothing is seeded twice.
*/}}
{{- define "workqueue-job.seeder.fixedSpec" -}}
# Exit codes as in the README's table. A list that cannot be seeded (4: a bad line, a count
# mismatch, a missing tasksFrom ConfigMap, another list in the queue, a full broker), bad
# settings (2) or a broker away past brokerOutageSeconds (5) fail the Job at once; anything
# else (1) is retried up to seeder.backoffLimit, and seeding resumes where it stopped.
podFailurePolicy:
  rules:
    - action: FailJob
      onExitCodes:
        containerName: seeder
        operator: In
        values: [2, 4, 5]
    # Stopped (143) or killed (137) by a deletion, a drain or an OOM kill: the next seeder
    # resumes where this one stopped.
    - action: Ignore
      onExitCodes:
        containerName: seeder
        operator: In
        values: [137, 143]
    - action: Ignore
      onPodConditions:
        - type: DisruptionTarget
          status: "True"
template:
  metadata:
    labels:
      {{- include "workqueue-job.podLabels" (dict "context" . "component" "seeder") | nindent 6 }}
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
    serviceAccountName: {{ include "workqueue-job.seeder.fullname" . }}
    automountServiceAccountToken: false
    {{- include "workqueue-job.podCommon" (dict "context" . "own" (dict)) | nindent 4 }}
    securityContext:
      {{- include "workqueue-job.podSecurityContext" . | nindent 6 }}
      fsGroup: {{ include "workqueue-job.runtimeUid" . }}
    containers:
      - name: seeder
        image: {{ include "workqueue-job.image" . }}
        imagePullPolicy: {{ .Values.image.pullPolicy }}
        command: ["workqueue", "seed"]
        args: ["--tasks", "/tasks", "--batch-size", "{{ .Values.seeder.batchSize }}",
               "--supersede", {{ include "workqueue-job.queueFamily" . | quote }}]
        env:
          {{- include "workqueue-job.brokerEnv" . | nindent 10 }}
          - name: WORKQUEUE_EXPECT_COUNT
            value: {{ include "workqueue-job.taskCount" . | quote }}
          - {name: WORKQUEUE_CONNECT_TIMEOUT, value: {{ .Values.worker.brokerOutageSeconds | quote }}}
          - {name: WORKQUEUE_OUTAGE_SECONDS, value: {{ .Values.worker.brokerOutageSeconds | quote }}}
        resources:
          {{- toYaml .Values.seeder.resources | nindent 10 }}
        securityContext:
          {{- include "workqueue-job.containerSecurityContext" (dict "uid" (include "workqueue-job.runtimeUid" .)) | nindent 10 }}
        volumeMounts:
          - {name: tasks, mountPath: /tasks, readOnly: true}
          {{- include "workqueue-job.brokerAuthMount" . | nindent 10 }}
    volumes:
      {{- include "workqueue-job.brokerAuthVolume" . | nindent 6 }}
      {{- include "workqueue-job.tasksVolume" . | nindent 6 }}
{{- end }}
