package pubsub

import (
	"context"
	"fmt"
	"slices"

	"cloud.google.com/go/iam/apiv1/iampb"
	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// PermPublish is the IAM permission a publisher needs on a topic.
const PermPublish = "pubsub.topics.publish"

// CheckTopic verifies, before anything is published, that topic exists in
// project and that the caller's principal may publish to it
// (TestIamPermissions). An emulator has no IAM: the permission step is then
// reported as not checked rather than failed. It returns a short account of
// what was verified.
func CheckTopic(ctx context.Context, client *pubsub.Client, project, topic string) (string, error) {
	path := "projects/" + project + "/topics/" + topic
	if _, err := client.TopicAdminClient.GetTopic(ctx, &pubsubpb.GetTopicRequest{Topic: path}); err != nil {
		if status.Code(err) == codes.NotFound {
			return "", fmt.Errorf("topic %s does not exist (create it with backbone provision)", path)
		}
		return "", fmt.Errorf("look up topic %s: %w", path, err)
	}
	resp, err := client.TopicAdminClient.TestIamPermissions(ctx, &iampb.TestIamPermissionsRequest{Resource: path, Permissions: []string{PermPublish}})
	switch {
	case status.Code(err) == codes.Unimplemented:
		return "exists; publish permission not checked (this Pub/Sub has no IAM, as an emulator)", nil
	case err != nil:
		return "", fmt.Errorf("check publish permission on %s: %w", path, err)
	case !slices.Contains(resp.GetPermissions(), PermPublish):
		return "", fmt.Errorf("this principal lacks %s on %s (grant roles/pubsub.publisher on the topic)", PermPublish, path)
	}
	return "exists; publish permission verified", nil
}
